"""Start-up to the first token: `seqpipe generate --max-new-tokens 1` against `python -c "import torch"` in the same
run (median of --repeat runs each, as ratios), the lean path (seqpipe.serving.local) side by side with the MLflow
pyfunc path it replaces; with --predict-model, `seqpipe predict --text` on a classifier too, lean and MLflow.

Run from the repo root after `dvc repro` (needs a registered language model):
    python bench/startup.py [--model models:/seqpipe-shakespeare@champion] [--tracking-uri sqlite:///mlflow.db]
                            [--predict-model models:/seqpipe-imdb@champion [--predict-uri URI]] [--repeat 5]
                            [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from common import report, wall  # bench/common.py

BIN = Path(sys.executable).parent
# The MLflow path as `seqpipe generate` took it before the lean one: store checked, model resolved, pyfunc loaded.
PYFUNC = ("import sys; from seqpipe.cli.commands import parser; from seqpipe.cli.predict import load_model; "
          "args = parser().parse_args(sys.argv[1:]); "
          "m = load_model(args.model, args.tracking_uri, 'generate').unwrap_python_model(); m.task.run_cli(args, m)")
# `seqpipe predict --text` as it was before the lean path: the pyfunc loaded, the row printed
PREDICT_PYFUNC = ("import sys; from seqpipe.cli.predict import load_model; "
                  "m = load_model(sys.argv[1], sys.argv[2], 'predict'); s = m.unwrap_python_model(); "
                  "row = m.predict(s.kind.text_request(sys.argv[3])).iloc[0]; "
                  "print('\\t'.join(f'{k}={v}' for k, v in row.items()))")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models:/seqpipe-shakespeare@champion")
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    ap.add_argument("--predict-model", default=None, help="a classifier, for `seqpipe predict --text`")
    ap.add_argument("--predict-uri", default=None, help="the classifier's tracking URI (default: --tracking-uri)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    env = dict(os.environ)  # the warnings a user sees are counted
    gen = ["generate", "--model", args.model, "--tracking-uri", args.tracking_uri, "--max-new-tokens", "1",
           "--seed", "1"]
    runs = {"python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "seqpipe generate, 1 token (lean)": [str(BIN / "seqpipe"), *gen],
            "seqpipe generate, 1 token (MLflow pyfunc path)": [sys.executable, "-c", PYFUNC, *gen]}
    if args.predict_model:
        uri = args.predict_uri or args.tracking_uri
        runs["seqpipe predict --text (lean)"] = [str(BIN / "seqpipe"), "predict", "--model", args.predict_model,
                                                "--tracking-uri", uri, "--text", "a fine film"]
        runs["seqpipe predict --text (MLflow pyfunc path)"] = [sys.executable, "-c", PREDICT_PYFUNC,
                                                              args.predict_model, uri, "a fine film"]
    rows: dict[str, float] = {}
    for name, cmd in runs.items():
        try:
            rows[f"{name} (s)"], err = wall(cmd, args.repeat, env)
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{e.stderr[-2000:]}") from None
        if name != "python -c 'import torch'":
            rows[f"{name}: x torch import"] = rows[f"{name} (s)"] / rows["python -c 'import torch' (s)"]
            rows[f"{name}: warnings printed"] = sum("Warning" in line for line in err.splitlines())
    report(rows, args.json, ">8.3f")


if __name__ == "__main__":
    main()
