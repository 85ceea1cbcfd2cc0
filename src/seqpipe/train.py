"""Train: seed, build the data module and model from config, fit with checkpoints and early stopping,
track the run in MLflow. `run(cfg)` is the entry point; `seqpipe train` and the DVC stage call it."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from seqpipe.atomic import write_json, write_text
from seqpipe.config import check_devices, validate
from seqpipe.data import provenance
from seqpipe.data.meta import prepared_meta
from seqpipe.errors import SeqpipeError
from seqpipe.models.gradflow import GradientFlow
from seqpipe.tasks import get_task, trained_by
from seqpipe.tasks.lightning import SeqModule
from seqpipe.tracking.runs import create_run, data_digest, ended_if_failed, flatten
from seqpipe.tracking.store import connect, env_unchanged, run_exists, shown_uri, store_lost, tracking_uri


def build_datamodule(cfg: DictConfig, meta: dict) -> L.LightningDataModule:
    """The task's data: token streams for a language model; padded, length-bucketed batches of examples otherwise."""
    return get_task(cfg.task).datamodule(cfg, meta)


def build_module(cfg: DictConfig, meta: dict) -> SeqModule:
    return SeqModule(cfg.task, meta, get_task(cfg.task).net_config(cfg), dict(cfg.optim), cfg.train.carry_state)


def input_params(meta: dict) -> dict[str, str]:
    """What the run logs about its inputs besides the config: the vocabulary size, or the number of features."""
    inputs = meta["inputs"]
    return {"data.vocab_size": str(inputs["vocab_size"])} if "vocab_size" in inputs else \
        {"data.features": str(inputs["features"])}


def history_csv(rows: list[dict]) -> str:
    fields = ["epoch", "step"] + sorted({k for row in rows for k in row} - {"epoch", "step"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _portable(path: str) -> str:
    """Relative to the working directory when inside it, so reports/train.json means the same in any clone."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


# What the train stage reads from params.yaml: dvc.yaml's train `params:` (tests/test_dag.py keeps them equal). A
# checkpoint resumes only under the same values of all of them but these, which cannot change what is learnt: the
# tracking store (a run tracked elsewhere resumes as a new run) and what the progress bar and summary show.
# The tasks' keys come from the tasks (Task.trained_by), in the registry's order.
PARAMS = ("seed", "task", "monitor", "data", "model", "optim", "train", "trainer", *trained_by(), "mlflow")
NOT_FINGERPRINTED = ("mlflow", "trainer.enable_progress_bar", "trainer.enable_model_summary")


def fingerprint(cfg: DictConfig, digest: str) -> str:
    """What a checkpoint must match to be resumed: the training config (PARAMS) and the data."""
    keep = {}
    for key in PARAMS:
        value = OmegaConf.select(cfg, key)
        keep[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    for key in NOT_FINGERPRINTED:
        section, _, leaf = key.partition(".")
        if leaf:
            keep[section].pop(leaf, None)
        else:
            keep.pop(section, None)
    return hashlib.sha256((json.dumps(keep, sort_keys=True) + digest).encode()).hexdigest()


def resumable(cfg: DictConfig, digest: str) -> dict | None:
    """The checkpoint and MLflow run of an interrupted run of this same config and data, if there is one.
    Checkpoints of another config or data are removed (by rank 0 only), so a changed config always starts fresh.

    Under DDP every rank decides for itself, and all decide alike: rank 0 removes the checkpoints before it writes
    the new run.json, and the others read run.json before they look for last.ckpt. A rank that reads the new
    run.json finds no last.ckpt; one that reads the old run.json decides as rank 0 did from it. (Ranks that
    Lightning starts begin only after rank 0 has done both.)"""
    models = Path(cfg.paths.models)
    last, info = models / "checkpoints" / "last.ckpt", models / "run.json"
    saved = json.loads(info.read_text()) if cfg.train.resume and info.is_file() else {}
    if saved.get("fingerprint") == fingerprint(cfg, digest) and not saved.get("complete") and last.is_file():
        return {"checkpoint": str(last), "run_id": saved["run_id"]}
    if rank_zero_only.rank == 0:
        shutil.rmtree(models / "checkpoints", ignore_errors=True)
    return None


def available_memory(accelerator: str) -> int:
    """Bytes a new network can take: the GPU's free memory, else the RAM Linux says is available."""
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(cfg: DictConfig, meta: dict) -> None:
    """Refuse a network whose weights, gradients and AdamW's two moments (float32) would not fit in memory, counted
    on a network built without storage (torch's meta device), before any of it is allocated."""
    task, m = get_task(cfg.task), cfg.model
    sizes = f"model.hidden_size={m.hidden_size}, num_layers={m.num_layers}, embedding_dim={m.embedding_dim}"
    fix = "lower model.hidden_size (or model.num_layers, model.embedding_dim)"
    try:
        with torch.device("meta"):
            net = task.build_net(meta, task.net_config(cfg))
    except RuntimeError as e:  # a tensor too large for torch to size at all
        if "overflow" not in str(e):
            raise
        raise SeqpipeError(f"the network is too large for torch to size ({sizes}): {fix}") from None
    n = sum(p.numel() for p in net.parameters())
    copies = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) and cfg.trainer.devices > 1 and \
        cfg.trainer.accelerator == "cpu" else 1  # DDP over CPU processes: one copy per process
    need, have = n * 4 * 4 * copies, available_memory(cfg.trainer.accelerator)
    if need > have:
        where = "the GPU" if cfg.trainer.accelerator in ("gpu", "cuda") else "this machine"
        raise SeqpipeError(f"the network has {n:,} parameters ({sizes}): {need / 2**30:,.1f} GiB for its weights, "
                           f"gradients and optimizer state, and {have / 2**30:,.1f} GiB is free on {where}; {fix}")


class StoreGone(L.Callback):
    """An MLflow call that failed after all of MLflow's retries (about 4 minutes) means the store is gone: Lightning
    ending the run as failed (its logger's finalize) would wait as long again, so later calls are tried once
    (`store_lost` puts the setting back)."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, MlflowException):
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"


def _no_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()  # Lightning advertises its cloud logger at every fit


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback]) -> L.Trainer:
    """The Trainer of cfg.trainer, built before a run is tracked: a setting Lightning refuses (a strategy it does not
    know, an argument the Trainer does not take) stops training with its message and leaves nothing behind. The
    MLflow logger is attached once the run exists."""
    try:
        return instantiate(cfg.trainer, logger=False, callbacks=callbacks,
                           log_every_n_steps=cfg.train.log_every_n_steps, default_root_dir=cfg.paths.models)
    except InstantiationException as e:
        reason = str(e.__cause__ or e).splitlines()[0]
        raise SeqpipeError(f"the trainer settings (trainer.*) are refused by Lightning: {reason}") from None


def run(cfg: DictConfig, callbacks: list[L.Callback] | tuple = (), tags: dict[str, str] | None = None) -> dict:
    """Fit a model; return the MLflow run id, the best checkpoint and its validation loss. A sweep adds its
    `callbacks` (reporting to Ray Tune) and run `tags` (its parent run, sweep and trial)."""
    validate(cfg)
    check_devices(cfg)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_advert)
    # DDP: epoch values are logged with sync_dist=False because they are already global (torchmetrics syncs the
    # loss and scores, the module sums tokens/s); Lightning would advise sync_dist=True for each of them.
    warnings.filterwarnings("ignore", message=r".*sync_dist=True.* when logging on epoch level in distributed")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    meta = prepared_meta(cfg)
    provenance.check(cfg, meta)
    check_memory(cfg, meta)
    dm = build_datamodule(cfg, meta)
    module = build_module(cfg, meta)

    ckpt_dir = Path(cfg.paths.models) / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=cfg.monitor, mode="min",
                                 save_last=True, auto_insert_metric_name=False, enable_version_counter=False)
    early = EarlyStopping(monitor=cfg.monitor, mode="min", patience=cfg.train.patience)
    # tqdm rather than rich: rich draws nothing until the end when the output is a log, not a terminal.
    bar = TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else 50)
    # train.gradient_flow: the gradient reaching each step, plotted per epoch; a caller that passes its own
    # GradientFlow (seqpipe study) reads the profiles from it afterwards
    flow = [GradientFlow(cfg.train.gradient_flow_every)] if cfg.train.gradient_flow and not any(
        isinstance(c, GradientFlow) for c in callbacks) else []
    trainer = build_trainer(cfg, [checkpoint, early, *([bar] if cfg.trainer.enable_progress_bar else []),
                                  *get_task(cfg.task).callbacks(cfg), *flow, StoreGone(), *callbacks])

    digest = data_digest(cfg.paths.prepared)
    # Rank 0 alone opens the store (other DDP ranks log nothing): under torchrun or srun every rank starts at once,
    # and two processes creating one SQLite store collide. Before anything is removed: a store that does not answer
    # stops the run here.
    rank0 = rank_zero_only.rank == 0
    uri = connect(cfg) if rank0 else tracking_uri(cfg)
    resume = resumable(cfg, digest)
    run_id = resume["run_id"] if resume else None
    if run_id and rank0 and not run_exists(run_id):  # the interrupted run was tracked elsewhere
        print(f"train: MLflow run {run_id} is not in {shown_uri(uri)}; the resumed training is tracked as a new run",
              file=sys.stderr)
        run_id = None
    with env_unchanged():
        if run_id is None and rank0:
            run_id = create_run(cfg, digest, {**flatten(cfg), "data.digest": digest, **input_params(meta)},
                                tags)
        with ended_if_failed(run_id if rank0 else None):  # never left RUNNING by a failed start
            trainer.logger = MLFlowLogger(experiment_name=cfg.mlflow.experiment, tracking_uri=uri, log_model=False,
                                          run_id=run_id) if rank0 else None
            if rank0:
                write_json(Path(cfg.paths.models) / "run.json", {"fingerprint": fingerprint(cfg, digest),
                                                                 "run_id": run_id})
                if resume:
                    print(f"train: resuming from {resume['checkpoint']} (MLflow run {run_id})", file=sys.stderr)
            start = time.perf_counter()
            with store_lost(uri, "training", f"the checkpoints in {ckpt_dir} are kept: run it again once the store "
                            "answers, and training resumes from the last (saved at each epoch's end) in the same "
                            "MLflow run"):
                trainer.fit(module, datamodule=dm, ckpt_path=resume["checkpoint"] if resume else None)
    fit_seconds = time.perf_counter() - start

    result = {
        "run_id": run_id,
        "best_checkpoint": _portable(checkpoint.best_model_path),
        "best_val_loss": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "fit_seconds": round(fit_seconds, 3),
    }
    if trainer.is_global_zero:
        write_json(Path(cfg.paths.models) / "run.json", {"fingerprint": fingerprint(cfg, digest),
                                                         "run_id": run_id, "complete": True})
        reports = Path(cfg.paths.reports)
        write_text(reports / "history.csv", history_csv(module.history))
        write_json(reports / "train.json", result)
    return result
