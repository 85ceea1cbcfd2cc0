"""Gradient flow through time: how much of the loss's gradient reaches each step of a sequence from its end.

`profile(task, net, batch)` counts the loss at each sequence's last step only (`Task.final_step_only`), runs the
encoder one step at a time (`Encoder.trace`) and returns ||dL/dh_t|| of the top layer against k, the number of steps
back from each row's last valid step (k = 0: the last step), averaged over the rows that have that step. For a tanh
RNN it falls roughly geometrically with k (vanishing gradients, Bengio et al. 1994); an LSTM's cell state carries it
much further. `GradientFlow` measures it on one fixed validation batch during training and logs a plot and the
numbers to the run (`train.gradient_flow`); `seqpipe study gating` overlays the cells' profiles.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import move_data_to_device
from matplotlib.figure import Figure
from torch import Tensor, nn

from seqpipe.errors import SeqpipeError
from seqpipe.models.attention import Seq2Seq
from seqpipe.models.nets import Encoder


def check_net(net: nn.Module) -> Encoder:
    """The unidirectional recurrent encoder whose steps the profile measures; other networks are refused."""
    if isinstance(net, Seq2Seq):
        raise SeqpipeError("train.gradient_flow measures the gradient that travels back through time from a "
                           "sequence's last step; a sequence-to-sequence decoder attends to every encoder step "
                           "directly, so there is no such path to measure: set train.gradient_flow=false")
    encoder = getattr(net, "encoder", None)
    if not isinstance(encoder, Encoder):
        raise SeqpipeError(f"train.gradient_flow needs a network with a recurrent encoder; {type(net).__name__} has "
                           "none: set train.gradient_flow=false")
    if encoder.bidirectional:
        raise SeqpipeError("train.gradient_flow measures the gradient that travels back through time from a "
                           "sequence's last step; a bidirectional encoder's backward direction reads the sequence "
                           "from that end, so its gradient does not travel that way: set model.bidirectional=false "
                           "(or train.gradient_flow=false)")
    return encoder


def _output_from_state(module: nn.Module, args: tuple, output: tuple) -> tuple[Tensor, object]:
    """A forward hook on the encoder's one-step RNN call: return the step's output as a view of the state it also
    returns (the same numbers), so that the traced state h_t is the one node through which the loss reaches step t,
    by the head as well as by the next step."""
    out, state = output
    h = state[0] if isinstance(state, tuple) else state  # (layers, B, H); LSTM: (h, c)
    return h[-1].unsqueeze(1), state                      # (B, 1, H)


def profile(task: object, net: nn.Module, batch: dict[str, Tensor]) -> np.ndarray:
    """||dL/dh_t|| of the top layer at k = 0, 1, ... steps back from each row's last valid step (batch["lengths"];
    all T when there are none), averaged over the rows that have step k. L counts each row's last step only and is
    scaled by the step's weight, so a row's figure is the gradient of its own loss. The network is left as it was:
    eval mode during the measurement (no dropout), and the parameters' .grad untouched (torch.autograd.grad). On a GPU
    it runs on torch's own kernels: cuDNN's RNN backward refuses eval mode."""
    encoder = check_net(net)
    batch = task.final_step_only(batch)
    was_training = net.training
    hook = encoder.rnn.register_forward_hook(_output_from_state)
    encoder.trace = []
    net.eval()
    try:
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
            step = task.step(net, batch, None)
            trace = encoder.trace  # T tensors (layers, B, H)
            grads = torch.autograd.grad(step.loss, trace, allow_unused=True)
    finally:
        encoder.trace = None
        hook.remove()
        net.train(was_training)
    norms = torch.stack([torch.zeros_like(h[-1][:, 0]) if g is None else g[-1].norm(dim=-1)
                         for g, h in zip(grads, trace)], dim=1) * float(step.weight)  # (B, T)
    B, T = norms.shape
    lengths = batch.get("lengths")
    lengths = torch.full((B,), T) if lengths is None else lengths.to(norms.device)
    k = lengths.unsqueeze(1) - 1 - torch.arange(T, device=norms.device).unsqueeze(0)  # (B, T): steps back
    valid = k >= 0
    sums = torch.zeros(T, dtype=norms.dtype, device=norms.device).index_add_(0, k[valid], norms[valid])
    rows = torch.bincount(k[valid], minlength=T)
    return (sums / rows.clamp(min=1)).detach().cpu().numpy()[:int(lengths.max())]


def rows_per_distance(batch: dict[str, Tensor], steps: int) -> list[int]:
    """How many rows of the batch have a step k back from their end, for k < steps."""
    lengths = batch.get("lengths")
    if lengths is None:
        return [int(batch["x"].shape[0])] * steps
    return [int((lengths > k).sum()) for k in range(steps)]


def plot_profile(ax: object, values: np.ndarray, **style: object) -> None:
    """One profile on a log-scale axis: ||dL/dh|| against steps back from the end."""
    values = np.asarray(values, dtype=float)
    ax.plot(np.arange(len(values)), np.where(values > 0, values, np.nan), **style)
    ax.set_yscale("log")
    ax.set_xlabel("k: steps back from the sequence's last step")
    ax.grid(alpha=0.3, which="both")


def save_plot(values: np.ndarray, title: str, out_png: Path) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    plot_profile(ax, values, marker=".", markersize=3)
    ax.set_ylabel("||dL/dh_(T-k)|| (top layer)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100, format="png")


class GradientFlow(L.Callback):
    """At the end of every `every`-th training epoch (the first included): the profile on the first validation batch
    (the same batch every time), logged to the MLflow run as gradient_flow/epoch_XXX.png and .json. The profiles
    stay in `self.profiles` ({epoch: array}) for the caller. Training is not affected: the optimizer, the gradients
    and the random state are left as they were."""

    def __init__(self, every: int = 1):
        self.every = every
        self.profiles: dict[int, np.ndarray] = {}
        self._batch: dict[str, Tensor] | None = None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        encoder = check_net(module.net)  # refused before the first step, not after an epoch
        if getattr(module.net, "pooling", "last") != "last" and trainer.is_global_zero:
            print(f"gradient flow: model.pooling={module.net.pooling} reads every step directly, so the profile "
                  "mixes those direct gradients with the ones that travel back from the end (pooling=last measures "
                  "the latter alone)", file=sys.stderr)
        self._cell = type(encoder.rnn).__name__.lower()

    def _first_val_batch(self, trainer: L.Trainer) -> dict[str, Tensor]:
        # Making a DataLoader iterator draws a seed from torch's global generator: fork it, so the training that
        # follows sees the same random numbers as without this callback.
        with torch.random.fork_rng(devices=[]):
            loader = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else \
                trainer.val_dataloaders
            return next(iter(loader))

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch % self.every or not trainer.is_global_zero:
            return
        if self._batch is None:
            self._batch = self._first_val_batch(trainer)
        batch = move_data_to_device(self._batch, module.device)
        values = profile(module.task, module.net, batch)
        self.profiles[epoch] = values
        self._log(trainer, epoch, values, rows_per_distance(self._batch, len(values)))

    def _log(self, trainer: L.Trainer, epoch: int, values: np.ndarray, rows: list[int]) -> None:
        logger = trainer.logger
        if not isinstance(logger, MLFlowLogger):
            return
        with tempfile.TemporaryDirectory() as tmp:
            png, numbers = Path(tmp) / f"epoch_{epoch:03d}.png", Path(tmp) / f"epoch_{epoch:03d}.json"
            save_plot(values, f"{self._cell}: gradient reaching each step from the last one, epoch {epoch}", png)
            numbers.write_text(json.dumps({"epoch": epoch, "step": trainer.global_step, "cell": self._cell,
                                           "layer": "top", "k": list(range(len(values))),
                                           "norm": [float(v) for v in values], "rows": rows}))
            for path in (png, numbers):
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="gradient_flow")
