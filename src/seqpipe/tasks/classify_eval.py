"""evaluate for labelled tasks: accuracy, macro-F1, per-class F1, confusion matrix, per-source scores and, for
numeric labels (star ratings), the mean absolute error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

from seqpipe.atomic import atomic_path, write_text
from seqpipe.data.batching import BucketBatchSampler, pad_collate
from seqpipe.data.examples import ExampleDataModule
from seqpipe.data.vocab import IGNORE_INDEX as IGNORE
from seqpipe.tasks.lightning import SeqModule


@torch.no_grad()
def predict_split(module: SeqModule, dm: ExampleDataModule, split: str) -> dict[str, np.ndarray]:
    """Per counted target (an example, or a step when tagging): predicted class, true class, example index."""
    ds = dm.splits[split]
    module.eval()
    preds, targets, owners, losses = [], [], [], []
    for batch_idx in BucketBatchSampler(ds.lengths.tolist(), dm.eval_batch_size, shuffle=False):
        batch = pad_collate([ds[i] for i in batch_idx], ignore_index=IGNORE)
        logits, _ = module.net(batch["x"], batch["lengths"])  # (B, C) or (B, T, C)
        y = batch["y"]
        own = torch.tensor(batch_idx).view(-1, *([1] * (y.dim() - 1))).expand_as(y)
        logits, y, own = logits.reshape(-1, logits.size(-1)), y.reshape(-1), own.reshape(-1)
        keep = y != IGNORE
        losses.append(F.cross_entropy(logits[keep], y[keep], reduction="sum").item())
        preds.append(logits[keep].argmax(-1))
        targets.append(y[keep])
        owners.append(own[keep])
    return {"pred": torch.cat(preds).numpy(), "target": torch.cat(targets).numpy(),
            "owner": torch.cat(owners).numpy(), "loss_sum": np.array(sum(losses))}


def scores(pred: np.ndarray, target: np.ndarray, labels: list[str]) -> dict:
    p, t, c = torch.from_numpy(pred), torch.from_numpy(target), len(labels)
    per_class = multiclass_f1_score(p, t, c, average="none")
    out = {"acc": float(multiclass_accuracy(p, t, c, average="micro")),
           "f1": float(multiclass_f1_score(p, t, c, average="macro")),
           "f1_per_class": {label: float(f) for label, f in zip(labels, per_class)},
           "count": int(len(t))}
    try:  # star ratings and other numeric labels: how far off, in label units
        values = np.array([float(x) for x in labels])
        out["mae"] = float(np.abs(values[pred] - values[target]).mean())
    except ValueError:
        pass
    return out


def plot_confusion(matrix: np.ndarray, labels: list[str], out_png: Path) -> None:
    norm = matrix / matrix.sum(1, keepdims=True).clip(min=1)
    fig = Figure(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1.5))
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{matrix[i, j]}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("confusion matrix (test)")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def evaluate_labels(module: SeqModule, dm: ExampleDataModule, out_dir: Path) -> dict:
    """Test metrics for a classifier or tagger; writes the confusion matrix (PNG, and CSV for `dvc plots`)."""
    dm.setup("test")
    out = predict_split(module, dm, "test")
    labels = dm.labels
    result = {"test/loss": float(out["loss_sum"]) / len(out["target"]), **{
        f"test/{k}": v for k, v in scores(out["pred"], out["target"], labels).items()}}
    sources = dm.splits["test"].sources
    if len(dm.source_names) > 1:
        result["test/per_source"] = {
            name: scores(out["pred"][mask], out["target"][mask], labels)
            for s, name in enumerate(dm.source_names) if (mask := sources[out["owner"]] == s).any()}
    matrix = multiclass_confusion_matrix(torch.from_numpy(out["pred"]), torch.from_numpy(out["target"]),
                                         len(labels)).numpy()
    plot_confusion(matrix, labels, out_dir / "confusion.png")
    if matrix.sum() <= 200_000:  # one row per target, as `dvc plots` wants; tagging has millions: PNG only
        rows = ["actual,predicted"] + [f"{labels[a]},{labels[p]}" for a in range(len(labels))
                                       for p in range(len(labels)) for _ in range(int(matrix[a, p]))]
        write_text(out_dir / "confusion.csv", "\n".join(rows) + "\n")
    result["test/ppl"] = math.exp(min(result["test/loss"], 50))
    return result
