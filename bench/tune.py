"""What a Ray Tune sweep costs over the same trainings run one after another in one process, and which way of sharing
the cores is faster: 1 trial at a time with all CPUs, or one trial per CPU side by side.

The same grid of configs (depth x hidden size, a fixed budget of batches, ASHA off so every trial does the same
work) runs three ways on the default recipe's prepared data:
  baseline     train.run for each config in one process, one after another (torch with every core)
  tune 1x2     seqpipe tune, 1 trial at a time with 2 CPUs (2 torch threads)
  tune 2x1     seqpipe tune, 2 trials at a time with 1 CPU each (1 torch thread each): the default
Per-trial overhead = (wall time - training time) / trials, where training time is the sum of each trial's
trainer.fit; the sweep's wall time leaves out starting Ray, shown on its own.

    python bench/tune.py [--prepared data/prepared] [--batches 10] [--epochs 2] [--json reports/bench_tune.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPTHS, HIDDEN = (1, 2), (32, 64, 128, 256)


def budget(args: argparse.Namespace, root: Path) -> list[str]:
    return [f"paths.prepared={Path(args.prepared).resolve()}", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"trainer.max_epochs={args.epochs}", f"trainer.limit_train_batches={args.batches}",
            f"trainer.limit_val_batches={args.val_batches}", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "train.resume=false"]


BASELINE = """
import json, sys, time
from omegaconf import open_dict
from seqpipe import train
from seqpipe.config import compose
overrides, root, points = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
rows, start = [], time.perf_counter()
for i, (depth, hidden) in enumerate(points):
    cfg = compose([*overrides, f"model.num_layers={depth}", f"model.hidden_size={hidden}"])
    with open_dict(cfg):
        cfg.paths.models, cfg.paths.reports = f"{root}/base/{i}/models", f"{root}/base/{i}/reports"
    rows.append(train.run(cfg)["fit_seconds"])
print(json.dumps({"wall": time.perf_counter() - start, "fit": sum(rows), "trials": len(rows)}))
"""


def baseline(args: argparse.Namespace, root: Path) -> dict:
    points = [[d, h] for d in DEPTHS for h in HIDDEN]
    out = subprocess.run([sys.executable, "-c", BASELINE, json.dumps(budget(args, root)), str(root),
                          json.dumps(points)], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {"mode": "baseline (one process)", "trials": r["trials"], "ray start s": 0.0, "wall s": r["wall"],
            "fit s": r["fit"]}


def sweep(args: argparse.Namespace, root: Path, cpus: int, concurrent: int) -> dict:
    name = f"bench-{cpus}x{concurrent}"
    space = ["~tune.space", f"+tune.space.model.num_layers.grid=[{','.join(map(str, DEPTHS))}]",
             f"+tune.space.model.hidden_size.grid=[{','.join(map(str, HIDDEN))}]", "tune.num_samples=1",
             f"tune.scheduler.grace_period={args.epochs}", f"tune.cpus_per_trial={cpus}",
             f"tune.max_concurrent={concurrent}", f"tune.storage={root / 'sweeps'}", f"tune.name={name}"]
    env = {**os.environ, "SEQPIPE_CONF_DIR": str(root / "conf"), "HOME": str(root)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "seqpipe", "tune", *budget(args, root), *space], cwd=ROOT, env=env,
                   check=True, capture_output=True, text=True)
    total = time.perf_counter() - start
    s = json.loads((root / "sweeps" / name / "summary.json").read_text())
    return {"mode": f"tune {concurrent} x {cpus} CPU", "trials": s["trials"], "ray start s": s["ray_start_seconds"],
            "wall s": s["wall_seconds"], "fit s": s["fit_seconds_total"], "command s": total,
            "best": s.get("best", {}).get("val/loss")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", default=str(ROOT / "data" / "prepared"))
    p.add_argument("--batches", type=int, default=10, help="training batches per epoch (trainer.limit_train_batches)")
    p.add_argument("--val-batches", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    import shutil

    with tempfile.TemporaryDirectory(prefix="seqpipe-bench-tune-") as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
        rows = [baseline(args, root), sweep(args, root, cpus=2, concurrent=1), sweep(args, root, cpus=1, concurrent=2)]
    print(f"{len(DEPTHS) * len(HIDDEN)} trainings (depth {DEPTHS} x hidden {HIDDEN}), {args.epochs} epochs of "
          f"{args.batches} batches each")
    print(f"{'mode':<24}{'trials':>7}{'ray start s':>13}{'wall s':>9}{'fit s':>9}{'overhead s/trial':>18}")
    for r in rows:
        r["overhead s/trial"] = (r["wall s"] - r["fit s"]) / r["trials"] if "1 x" in r["mode"] or "base" in r[
            "mode"] else None
        over = f"{r['overhead s/trial']:.2f}" if r["overhead s/trial"] is not None else "(overlaps)"
        print(f"{r['mode']:<24}{r['trials']:>7}{r['ray start s']:>13.1f}{r['wall s']:>9.1f}{r['fit s']:>9.1f}"
              f"{over:>18}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
