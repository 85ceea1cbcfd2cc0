"""Regression: one number per sequence (many-to-one), e.g. the adding problem. Mean squared error is the loss;
the test adds the mean absolute error, the share of predictions within `TOLERANCE` of the target, and the MSE of
always predicting the train split's mean target (the figure a model must beat)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from omegaconf import DictConfig
from torchmetrics import MeanMetric, Metric

from seqpipe.atomic import atomic_path, write_text
from seqpipe.data.batching import pad_collate
from seqpipe.data.documents import Document
from seqpipe.errors import SeqpipeError
from seqpipe.tasks import classify_served
from seqpipe.tasks.base import ExampleTask, Step
from seqpipe.tasks.rules import RegressRules

TOLERANCE = 0.04  # "solved" on the adding problem: within 0.04 of the target (Le et al. 2015)


class WithinTolerance(MeanMetric):
    """The share of predictions within TOLERANCE of their target."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        super().update(((preds - target).abs() <= TOLERANCE).float())


class Regress(RegressRules, ExampleTask):
    # name, inputs, carries_state, section, trained_by, check(cfg): its config rules (seqpipe.tasks.rules)
    key = "target"
    stratify = False

    def target_meta(self, cfg: DictConfig, docs: list[Document]) -> dict:
        values = np.array([self.encode_target(d, {}) for d in docs])
        return {"size": 1, "mean": float(values.mean())}

    def encode_target(self, doc: Document, target: dict) -> float:
        value = doc.get("target")  # bool is an int to Python, but not a measurement
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SeqpipeError(f"example {doc['id']!r}: target {value!r} is not a finite number; a regression target "
                               "must be a number: fix the data")
        return float(value)

    def build_net(self, meta: dict, model: dict):  # noqa: ANN201
        return classify_served.task_net(self.name, meta, model)  # a classifier's network with one output: the value

    def step(self, net, batch, state) -> Step:  # noqa: ANN001
        out, _ = net(batch["x"], batch["lengths"])  # (B, 1)
        pred, y = out.squeeze(-1), batch["y"].float()  # (B,), (B,)
        return Step(F.mse_loss(pred, y), len(y), pred.detach(), y)

    def metrics(self, meta: dict) -> dict[str, Metric]:
        return {"within": WithinTolerance()}

    @torch.no_grad()
    def predictions(self, module, dm, split: str) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        dm.setup("test")
        ds, net = dm.splits[split], module.net.eval()
        preds, targets = [], []
        for start in range(0, len(ds), dm.eval_batch_size):
            batch = pad_collate([ds[i] for i in range(start, min(start + dm.eval_batch_size, len(ds)))])
            preds.append(self.step(net, batch, None).preds)
            targets.append(batch["y"].float())
        return torch.cat(preds).numpy(), torch.cat(targets).numpy()

    def evaluate(self, cfg: DictConfig, module, dm, out_dir: Path) -> dict:  # noqa: ANN001
        pred, target = self.predictions(module, dm, "test")
        err = pred - target
        mean = dm.meta["target"]["mean"]
        plot_predictions(pred, target, out_dir / "predictions.png")
        write_text(out_dir / "predictions.csv", "target,prediction\n" +
                   "".join(f"{t:.6g},{p:.6g}\n" for t, p in zip(target, pred)))
        return {"test/loss": float((err ** 2).mean()), "test/mae": float(np.abs(err).mean()),
                "test/within": float((np.abs(err) <= TOLERANCE).mean()),
                "test/mean_baseline_loss": float(((target - mean) ** 2).mean())}

    def output_example(self, meta: dict) -> dict:
        return {"prediction": [0.5]}

    def predict(self, model, model_input, params) -> list[dict]:  # noqa: ANN001
        xs, _ = model.encode(model_input, self.name)
        return classify_served.answer_rows(model, self.name, xs, None)


def plot_predictions(pred: np.ndarray, target: np.ndarray, out_png: Path) -> None:
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.scatter(target, pred, s=4, alpha=0.4)
    low, high = float(min(target.min(), pred.min())), float(max(target.max(), pred.max()))
    ax.plot([low, high], [low, high], color="black", lw=1, label="prediction = target")
    ax.set_xlabel("target")
    ax.set_ylabel("prediction")
    ax.set_title(f"test: MSE {float(((pred - target) ** 2).mean()):.4f}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
