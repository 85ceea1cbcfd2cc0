"""The LightningModule: one shared step for every split and task (the task computes it), metrics, optimizer and
schedule."""

from __future__ import annotations

import math
import time

import lightning.pytorch as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection

from seqpipe.errors import SeqpipeError
from seqpipe.models.nets import State, detach_state
from seqpipe.tasks import get_task

STAGES = ("train", "val", "test")
Batch = dict[str, Tensor]


class SeqModule(L.LightningModule):
    """Wraps a plain network. Only plain values go into hyperparameters, so checkpoints load with
    `weights_only=True`."""

    def __init__(self, task: str, meta: dict, net: dict, optim: dict, carry_state: bool = False):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the run's params are the flat config, logged by train
        self.task = get_task(task)
        self.net = self.task.build_net(meta, net)
        self.optim, self.carry_state = optim, carry_state
        self.losses = torch.nn.ModuleDict({f"{s}_loss": MeanMetric() for s in STAGES})  # target-weighted mean loss
        metrics = {s: self.task.metrics(meta) for s in STAGES}  # e.g. accuracy and macro-F1 when classifying
        self.scores = torch.nn.ModuleDict({f"{s}_scores": MetricCollection(m) for s, m in metrics.items() if m})
        self._state: dict[str, State] = {}
        self.history: list[dict] = []  # one row per epoch, for the learning curve
        self._tokens, self._t0 = 0, 0.0

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: State = None) -> tuple[Tensor, State]:
        return self.net(x, lengths, state)

    def _step(self, batch: Batch, stage: str) -> Tensor:
        # Stateful truncated BPTT: start from the state the previous chunk of the same streams ended in.
        state = self._state.get(stage) if self.carry_state else None
        step = self.task.step(self.net, batch, state)
        if self.carry_state:
            self._state[stage] = detach_state(step.state)
        self.losses[f"{stage}_loss"].update(step.loss.detach(), weight=step.weight)
        if f"{stage}_scores" in self.scores:
            self.scores[f"{stage}_scores"].update(step.preds, step.target)
        if stage == "train":  # useful steps (tokens or frames), padding not counted
            x = batch["x"]
            self._tokens += int(batch["lengths"].sum()) if "lengths" in batch else x.shape[0] * x.shape[1]
        return step.loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):
            raise SeqpipeError(
                f"the training loss became {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); "
                "training stopped and the last good checkpoint is kept. Lower optim.lr, keep gradient clipping "
                "on (trainer.gradient_clip_val), or check the data for extreme values."
            )
        if self._shown(batch_idx):
            self.log("train/loss_step", loss, prog_bar=True)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def _shown(self, batch_idx: int) -> bool:
        """Whether the logger writes this step or the progress bar draws it. Per-step values are logged only then:
        a `self.log` call costs ~0.5 ms, as much as the whole step of a small model (bench/throughput.py)."""
        t = self.trainer
        bar = t.progress_bar_callback
        return ((self.global_step + 1) % max(t.log_every_n_steps, 1) == 0
                or (bar is not None and (batch_idx + 1) % max(getattr(bar, "refresh_rate", 1), 1) == 0))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def _epoch_start(self, stage: str) -> None:
        self._state.pop(stage, None)  # every epoch starts the streams from their beginning
        self.losses[f"{stage}_loss"].reset()
        if f"{stage}_scores" in self.scores:
            self.scores[f"{stage}_scores"].reset()

    def _epoch_end(self, stage: str) -> dict[str, float]:
        loss = float(self.losses[f"{stage}_loss"].compute())
        metrics = {f"{stage}/loss": loss, **self.task.loss_metrics(stage, loss)}
        if f"{stage}_scores" in self.scores:
            scores = self.scores[f"{stage}_scores"]
            metrics |= {f"{stage}/{k}": float(v) for k, v in scores.compute().items()}
            scores.reset()
        self.log_dict(metrics, prog_bar=stage == "val", sync_dist=False)  # torchmetrics already sync
        self.losses[f"{stage}_loss"].reset()
        return metrics

    def on_train_epoch_start(self) -> None:
        # Lightning sets the epoch of a DataLoader's sampler, not of a batch sampler: without this, bucketed batches
        # would come in the same order every epoch.
        batches = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(self.current_epoch)
        self._epoch_start("train")
        self._tokens, self._t0 = 0, time.perf_counter()

    def on_validation_epoch_start(self) -> None:
        self._epoch_start("val")

    def on_test_epoch_start(self) -> None:
        self._epoch_start("test")

    def on_validation_epoch_end(self) -> None:
        metrics = self._epoch_end("val")
        if not self.trainer.sanity_checking:
            self._val_metrics = metrics

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def on_train_epoch_end(self) -> None:
        # Under DDP the tokens of every rank (one process: this one's own count, unchanged).
        count = torch.tensor(self._tokens, dtype=torch.float64, device=self.device)
        tokens = float(self.trainer.strategy.reduce(count, reduce_op="sum"))
        tokens_per_sec = tokens / max(time.perf_counter() - self._t0, 1e-9)
        metrics = self._epoch_end("train")
        self.log("train/tokens_per_sec", tokens_per_sec)
        row = {"epoch": self.current_epoch, "step": self.global_step, **metrics,
               "train/tokens_per_sec": tokens_per_sec, **getattr(self, "_val_metrics", {})}
        self.history.append(row)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["history"] = self.history  # plain floats: the learning curve survives a resume

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("history", []))

    def configure_optimizers(self) -> dict:
        opt = torch.optim.AdamW(self.parameters(), lr=self.optim["lr"], weight_decay=self.optim["weight_decay"])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(int(self.optim.get("warmup_steps", 0)), total // 2)
        cosine = self.optim.get("schedule", "cosine") == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))  # cosine from 1 down to 0.1

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
