"""DVC stage `evaluate`: the best checkpoint on the test split -> metrics.json, a text sample and the
learning curve, also recorded in the training run in MLflow."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning.pytorch as L
import mlflow
from omegaconf import DictConfig

from seqpipe.atomic import atomic_path, write_json, write_text
from seqpipe.errors import SeqpipeError
from seqpipe.module import SeqModule
from seqpipe.sampling import complete
from seqpipe.tokenize import load_tokenizer
from seqpipe.tracking import tracking_uri
from seqpipe.train import build_datamodule


def read_train_result(cfg: DictConfig) -> dict:
    path = Path(cfg.paths.reports) / "train.json"
    if not path.is_file():
        raise SeqpipeError(f"{path} not found: run the train stage first (`dvc repro train`)")
    return json.loads(path.read_text())


def plot_learning_curve(history_csv: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train/loss", "val/loss"):
        pts = [(int(r["epoch"]) + 1, float(r[key])) for r in rows if r.get(key)]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def run(cfg: DictConfig) -> dict:
    info = read_train_result(cfg)
    module = SeqModule.load_from_checkpoint(info["best_checkpoint"], map_location="cpu", weights_only=True)
    dm = build_datamodule(cfg)
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=cfg.trainer.enable_progress_bar)
    (scores,) = trainer.test(module, datamodule=dm, verbose=False)
    loss = float(scores["test/loss"])
    metrics = {"test_loss": loss, "test_bpc": loss / math.log(2), "test_ppl": math.exp(loss),
               "best_val_loss": info["best_val_loss"], "epochs": info["epochs"], "steps": info["steps"]}

    e = cfg.evaluate
    vocab = dm.vocab
    sample = complete(module.net.cpu(), vocab, load_tokenizer(vocab.tokenizer), e.prompt, e.sample_tokens,
                      e.temperature, e.top_k, seed=cfg.seed)
    reports = Path(cfg.paths.reports)
    write_json(reports / "metrics.json", metrics)
    write_text(reports / "sample.txt", sample + "\n")
    plot_learning_curve(reports / "history.csv", reports / "learning_curve.png")

    mlflow.set_tracking_uri(tracking_uri(cfg))
    client = mlflow.MlflowClient()
    for key in ("test_loss", "test_bpc", "test_ppl"):
        client.log_metric(info["run_id"], key.replace("_", "/", 1), metrics[key])
    for name in ("sample.txt", "learning_curve.png", "history.csv", "metrics.json"):
        client.log_artifact(info["run_id"], str(reports / name), artifact_path="evaluate")
    print(f"evaluate: test loss {loss:.4f} nats/token, {metrics['test_bpc']:.4f} bits/token, "
          f"perplexity {metrics['test_ppl']:.2f}\n--- sample ---\n{sample}\n---")
    return metrics
