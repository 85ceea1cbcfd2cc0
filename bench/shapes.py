"""Figures for the frame-input shapes: the whole pipeline (fetch, prepare, train, evaluate) on variants of a recipe,
each in its own temporary folder and MLflow store, run side by side (each worker gets its share of the cores), and
printed as one table.

    python bench/shapes.py adding      # rnn / gru / lstm at T = 50 and 100, the same budget (README table)
    python bench/shapes.py activity    # GunPoint, BasicMotions, PickupGestureWiimoteZ, moving_digits
    python bench/shapes.py activity --set recipe.dataset=GunPoint --set model.cell=lstm   # one variant
    [--workers 2] [--json reports/bench_shapes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SUITES = {
    "adding": [[f"recipe.length={t}", f"model.cell={c}"] for t in (50, 100) for c in ("rnn", "gru", "lstm")],
    "activity": [[f"recipe.dataset={d}"] for d in ("GunPoint", "BasicMotions", "PickupGestureWiimoteZ",
                                                     "moving_digits")],
}
ROOT = Path(__file__).resolve().parents[1]  # this checkout: conf/ and data/downloads
SHOWN = ("test/loss", "test/acc", "test/f1", "test/within", "test/mean_baseline_loss", "train/epochs")


def run_variant(recipe: str, overrides: list[str], threads: int) -> dict:
    """One variant through fetch -> prepare -> train -> evaluate in a fresh folder; its metrics and wall time."""
    import torch

    torch.set_num_threads(threads)
    from seqpipe import evaluate, fetch, prepare, train
    from seqpipe.config import compose

    downloads = ROOT / "data" / "downloads"  # archives are verified and reused, not fetched again
    with tempfile.TemporaryDirectory(prefix="seqpipe-shapes-") as tmp:
        os.chdir(tmp)
        # an absolute store URI: MLflow caches one store per URI, and a relative one would point at the last folder
        cfg = compose([f"recipe={recipe}", *overrides, f"paths.downloads={downloads}",
                       f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", "trainer.enable_progress_bar=false",
                       "trainer.enable_model_summary=false"], ROOT / "conf")
        t0 = time.perf_counter()
        for stage in (fetch, prepare, train):
            stage.run(cfg)
        metrics = evaluate.run(cfg)
        os.chdir(ROOT)  # before the folder goes: the next variant in this worker starts from here
    return {"recipe": recipe, "overrides": overrides, "seconds": round(time.perf_counter() - t0, 1),
            **{k: metrics[k] for k in SHOWN if k in metrics}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", choices=sorted(SUITES))
    p.add_argument("--set", action="append", default=[], help="run one variant with these overrides instead")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    variants = [args.set] if args.set else SUITES[args.recipe]
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run_variant, [args.recipe] * len(variants), variants, [threads] * len(variants)))
    keys = [k for k in SHOWN if any(k in r for r in rows)]
    print("| variant | " + " | ".join(keys) + " | seconds |")
    print("|---" * (len(keys) + 2) + "|")
    for r in rows:
        cells = [f"{r[k]:.4g}" if k in r else "" for k in keys]
        print(f"| {' '.join(r['overrides'])} | " + " | ".join(cells) + f" | {r['seconds']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
