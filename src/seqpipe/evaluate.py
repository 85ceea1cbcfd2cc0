"""DVC stage `evaluate`: the best checkpoint on the test split -> metrics.json, the task's plots and samples and the
learning curve, also recorded in the training run in MLflow."""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path

import mlflow
from matplotlib.figure import Figure
from mlflow.entities import Metric
from omegaconf import DictConfig

from seqpipe.atomic import atomic_path, write_json
from seqpipe.data import provenance
from seqpipe.data.meta import prepared_meta
from seqpipe.errors import SeqpipeError
from seqpipe.tasks import get_task
from seqpipe.tasks.lightning import SeqModule
from seqpipe.tracking.store import connect, require_run
from seqpipe.train import build_datamodule


def read_train_result(cfg: DictConfig) -> dict:
    path = Path(cfg.paths.reports) / "train.json"
    if not path.is_file():
        raise SeqpipeError(f"{path} not found: run the train stage first (`dvc repro train`)")
    return json.loads(path.read_text())


def load_checkpoint(path: str | Path, meta: dict | None = None) -> SeqModule:
    """The trained module, loaded with weights_only=True; a missing, corrupt or mismatched file is refused
    (and left as it is)."""
    if not Path(path).is_file():
        raise SeqpipeError(f"checkpoint {path} not found: run the train stage (`dvc repro -f train`)")
    try:
        module = SeqModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise SeqpipeError(f"checkpoint {path} cannot be loaded ({type(e).__name__}: {str(e)[:200]}); it was left "
                           "as it is: retrain with `dvc repro -f train`") from None
    trained = module.hparams.meta["inputs"]
    if meta is not None and trained != meta["inputs"]:
        size = ("a vocabulary of {vocab_size} tokens" if "vocab_size" in trained else "{features} features").format
        raise SeqpipeError(f"checkpoint {path} was trained with {size(**trained)}, but the prepared data has "
                           f"{size(**meta['inputs'])}: the data changed since training; retrain with "
                           "`dvc repro train`")
    return module


def plot_learning_curve(history_csv: Path, out_png: Path) -> None:
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key in ("train/loss", "val/loss"):
        pts = [(int(r["epoch"]) + 1, float(r[key])) for r in rows if r.get(key)]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (cross-entropy in nats, or MSE)")
    ax.set_title("learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


SYMBOLS = {"+": "plus", "-": "minus", ".": "dot"}  # one-character labels MLflow would refuse or garble in a key


def metric_key(part: str) -> str:
    """A label as MLflow metric-name text (letters, digits, _ - . / and spaces only)."""
    part = SYMBOLS.get(part, part)
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", part)


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested metrics as MLflow keys, the one name each metric has everywhere (metrics.json, MLflow, the registry):
    {"test/f1_per_class": {"+": ..}} -> test/f1_per_class/plus."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = prefix + (metric_key(str(k)) if prefix else k)
        if isinstance(v, dict):
            out |= flat_metrics(v, f"{key}/")
        elif isinstance(v, int | float):
            out[key] = float(v)
    return out


def run(cfg: DictConfig) -> dict:
    info = read_train_result(cfg)
    reports = Path(cfg.paths.reports)
    meta = prepared_meta(cfg)
    provenance.check(cfg, meta)
    dm = build_datamodule(cfg, meta)
    module = load_checkpoint(info["best_checkpoint"], meta)
    connect(cfg, must_exist=True)  # before any output is replaced
    require_run(info["run_id"], str(reports / "train.json"))
    with atomic_path(reports / "evaluate", is_dir=True) as out_dir:
        metrics = get_task(cfg.task).evaluate(cfg, module, dm, out_dir)
        plot_learning_curve(reports / "history.csv", out_dir / "learning_curve.png")
    metrics = flat_metrics({**metrics, "val/best_loss": info["best_val_loss"], "train/epochs": info["epochs"],
                            "train/steps": info["steps"]})
    write_json(reports / "metrics.json", metrics)

    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(info["run_id"], metrics=[Metric(k, v, now, info["steps"]) for k, v in metrics.items()
                                              if math.isfinite(v)])
    client.log_artifacts(info["run_id"], str(reports / "evaluate"), artifact_path="evaluate")
    for name in ("history.csv", "metrics.json"):
        client.log_artifact(info["run_id"], str(reports / name), artifact_path="evaluate")
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.count("/") == 1 and not k.startswith("train/"))
    print(f"evaluate: {shown}")
    return metrics
