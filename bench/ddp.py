"""DDP against one process on the default recipe (shakespeare LM) with the same global batch: `seqpipe train` with
trainer=cpu and data.batch_size=G against trainer=ddp_cpu (2 processes) and data.batch_size=G/2, each for a short
budget of steps. Prints global tokens/s (train/tokens_per_sec sums the ranks) and the epoch's losses.

    python bench/ddp.py [--global-batch 64] [--steps 60] [--prepared data/prepared]

Needs a prepared shakespeare split (`dvc repro prepare`). MLflow runs and Hydra folders go to a temporary folder.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(trainer: str, batch: int, eval_batch: int, args: argparse.Namespace, root: Path,
          threads: int | None = None) -> dict:
    """One `seqpipe train` of 1 epoch limited to `args.steps` steps; its history row, wall time and trainer.
    `threads` sets OMP_NUM_THREADS (torch's threads); None leaves torch's default (one per core)."""
    out = root / f"{trainer}-{threads}"
    cmd = [sys.executable, "-m", "seqpipe", "train", f"trainer={trainer}", f"data.batch_size={batch}",
           f"data.eval_batch_size={eval_batch}", "trainer.max_epochs=1", f"trainer.limit_train_batches={args.steps}",
           f"trainer.limit_val_batches={args.val_steps}", "trainer.enable_progress_bar=false",
           f"paths.prepared={Path(args.prepared).resolve()}", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
           f"hydra.run.dir={out}"]
    start = time.perf_counter()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    with open(out / "reports" / "history.csv") as f:
        (row,) = list(csv.DictReader(f))
    return {"trainer": trainer, "streams per rank": batch, "wall s": wall, "threads": threads or "default", **row}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--global-batch", type=int, default=64, help="streams in one optimizer step, all ranks together")
    p.add_argument("--steps", type=int, default=60, help="training steps (trainer.limit_train_batches)")
    p.add_argument("--val-steps", type=int, default=20, help="validation chunks (trainer.limit_val_batches)")
    p.add_argument("--prepared", default="data/prepared")
    args = p.parse_args()
    g = args.global_batch
    with tempfile.TemporaryDirectory(prefix="seqpipe-bench-ddp-") as tmp:
        # DDP ranks get cores / processes torch threads from Lightning (one each on 2 cores); one process gets torch's
        # default (one per core), and, for comparison, one thread.
        rows = [train("cpu", g, 16, args, Path(tmp)), train("cpu", g, 16, args, Path(tmp), threads=1),
                train("ddp_cpu", g // 2, 8, args, Path(tmp))]
    print(f"global batch {g} streams x bptt, {args.steps} steps, 1 epoch\n")
    print("| trainer | processes | torch threads | streams per rank | global tokens/s | train/loss | val/loss | "
          "wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r, n in zip(rows, (1, 1, 2)):
        threads = "1 per rank (Lightning)" if n > 1 else r["threads"]
        print(f"| {r['trainer']} | {n} | {threads} | {r['streams per rank']} | "
              f"{float(r['train/tokens_per_sec']):,.0f} | {float(r['train/loss']):.4f} | {float(r['val/loss']):.4f} | "
              f"{r['wall s']:.1f} |")


if __name__ == "__main__":
    main()
