"""Start-up and data preparation: `seqpipe --help` and `seqpipe generate` to the first token against a bare Python
start; `prepare` MB/s against a plain read of the same documents; peak memory of prepare and of a short train.
Run from the repo root after `dvc repro` (uses data/raw and the registered champion when present).

    python bench/startup_prepare.py [--json reports/bench_startup.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report, wall  # bench/common.py

BIN = Path(sys.executable).parent


def peak_rss_mb(code: str) -> tuple[float, str]:
    """Peak resident memory of a Python child process that runs `code` (the child reports its own peak)."""
    report = "; import resource; print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True, check=True).stdout
    return int(out.rsplit("PEAK", 1)[1]) / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--model", default="models:/seqpipe-shakespeare@champion")
    args = ap.parse_args()
    rows: dict[str, float] = {}
    rows["python -c pass (s)"] = wall([sys.executable, "-c", "pass"])[0]
    rows["seqpipe --help (s)"] = wall([str(BIN / "seqpipe"), "--help"])[0]
    try:
        rows["seqpipe generate, 1 token (s)"] = wall([str(BIN / "seqpipe"), "generate", "--model", args.model,
                                                      "--max-new-tokens", "1"], repeat=3)[0]
    except subprocess.CalledProcessError:
        print(f"(no {args.model} registered here: generate start-up skipped)")

    raw = Path("data/raw/documents.jsonl")
    if raw.is_file():
        mb = raw.stat().st_size / 1e6
        t = time.perf_counter()
        docs = [json.loads(line) for line in raw.open(encoding="utf-8")]
        plain = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            code = ("import time; from seqpipe.config import compose; from seqpipe import prepare; "
                    f"cfg = compose(['paths.prepared={tmp}/p', 'paths.reports={tmp}/r']); t = time.perf_counter(); "
                    "prepare.run(cfg); print('ELAPSED', time.perf_counter() - t)")
            t = time.perf_counter()
            rss, out = peak_rss_mb(code)
            whole = time.perf_counter() - t
        rows["prepare peak RSS (MB)"] = rss
        rows["plain read of documents.jsonl (MB/s)"] = mb / plain
        stage = float(out.split("ELAPSED")[1].split()[0])
        rows["prepare.run: read, tokenize, split, encode, write (MB/s)"] = mb / stage
        rows["prepare, whole process incl. imports (MB/s)"] = mb / whole
        rows["documents"] = len(docs)
    code = ("from seqpipe.config import compose; from seqpipe import train; "
            "train.run(compose(['trainer.max_epochs=1', 'trainer.limit_train_batches=20', "
            "'trainer.limit_val_batches=2', 'trainer.enable_progress_bar=false', 'paths.models=/tmp/bench_m', "
            "'paths.reports=/tmp/bench_r', 'mlflow.tracking_uri=sqlite:////tmp/bench_startup.db']))")
    if Path("data/prepared/vocab.json").is_file():
        rows["train (20 steps) peak RSS (MB)"] = peak_rss_mb(code)[0]
    report(rows, args.json)


if __name__ == "__main__":
    main()
