"""One trial of a `seqpipe tune` sweep, run by a Ray worker: the sweep's config with the sampled values, trained by
`train.run` (no second training loop) with a callback that reports each validation to Tune."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import lightning.pytorch as L
import mlflow
import ray
import torch
from omegaconf import OmegaConf, open_dict
from ray import tune

from seqpipe import train
from seqpipe.atomic import write_json
from seqpipe.experiments.sweep_common import metric_name, trial_dir
from seqpipe.tracking.runs import create_run, data_digest, flatten
from seqpipe.tracking.store import connect


class ReportToTune(L.Callback):
    """Reports the validation metrics to Tune after each validation (after the checkpoint is saved). When Tune stops
    the trial (ASHA, or the last epoch), its `report` raises SystemExit in this thread: the training then ends like
    an early stop, so the run is tracked as finished, and the trial function re-raises it (Ray waits for nothing
    more from a stopped trial)."""

    def __init__(self, monitor: str):
        self.monitor, self.stopped, self.epochs = monitor, False, 0

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.stopped:
            return
        metrics = {metric_name(k): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        metrics["epoch"] = self.epochs = trainer.current_epoch + 1
        try:
            tune.report(metrics)
        except SystemExit:  # Tune's scheduler stopped this trial
            self.stopped = True
            trainer.should_stop = True


class TrackAttempt(L.Callback):
    """Tags the trial's run, once it exists, with the Ray node this attempt runs on and the number of attempts. A
    trial runs again when its worker or node is lost (tune.max_failures) or the sweep is resumed; an attempt that
    goes on from the last checkpoint keeps the run, one that starts afresh (no checkpoint yet) has a new run, and
    the run the lost attempt left RUNNING is ended as KILLED, tagged `superseded_by` the new one."""

    def __init__(self, tags: dict[str, str]):
        self.tags = tags

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        client, run_id = mlflow.MlflowClient(), trainer.logger.run_id
        attempts = int(client.get_run(run_id).data.tags.get("attempts", "0")) + 1
        for key, value in {**node_tags(), "attempts": str(attempts)}.items():
            client.set_tag(run_id, key, value)
        for old in trial_runs(client, self.tags):
            if old.info.run_id != run_id and old.info.status == "RUNNING":
                client.set_tag(old.info.run_id, "superseded_by", run_id)
                client.set_terminated(old.info.run_id, "KILLED")


def node_tags() -> dict[str, str]:
    """The Ray node of this worker: its id (unique, also between nodes on one machine), name and IP address."""
    node_id = ray.get_runtime_context().get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), {})
    return {"node": node_id, "node.name": node.get("NodeName", ""), "node.ip": node.get("NodeManagerAddress", "")}


def trial_runs(client: mlflow.MlflowClient, tags: dict) -> list:
    """Every MLflow run of the trial: one, or more where attempts started afresh."""
    experiment_id = client.get_run(tags["mlflow.parentRunId"]).info.experiment_id
    return client.search_runs([experiment_id], f"tags.trial = '{tags['trial']}' and tags.sweep = '{tags['sweep']}'")


def run_trial(config: dict, base: dict, sweep: dict) -> None:
    """One trial (in a Ray worker): the base config with the sampled values, trained by train.run."""
    os.chdir(sweep["root"])  # Ray starts trials in their own folder; the config's relative paths are the project's
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the sweep's store is in the config
    torch.set_num_threads(max(1, int(sweep["cpus"])))  # its share of the cores: more threads slow every trial
    cfg = OmegaConf.create(base)
    for key, value in config.items():
        OmegaConf.update(cfg, key, value)
    trial_id = tune.get_context().get_trial_id()
    folder = trial_dir(sweep["dir"], trial_id)
    with open_dict(cfg):
        cfg.paths.models, cfg.paths.reports = str(folder / "models"), str(folder / "reports")
        cfg.trainer.enable_progress_bar = cfg.trainer.enable_model_summary = False
    tags = {"mlflow.parentRunId": sweep["parent"], "sweep": sweep["name"], "trial": trial_id,
            **{f"space.{k}": str(v) for k, v in config.items()}}
    reporter = ReportToTune(cfg.monitor)
    try:
        result = train.run(cfg, callbacks=[reporter, TrackAttempt(tags)], tags=tags)
    except Exception as e:  # noqa: BLE001
        # The trial's own error (a value refused, out of memory, a NaN loss): its run says why and the sweep goes on.
        # It is not raised to Ray, which would run the trial again (tune.max_failures) to fail the same way: Ray
        # retries the trials whose worker or node was lost.
        record_failure(cfg, tags, e)
        traceback.print_exc(file=sys.stderr)
        return
    client = mlflow.MlflowClient()
    early = reporter.stopped and reporter.epochs < cfg.trainer.max_epochs
    client.set_tag(result["run_id"], "stopped", "asha" if early else "no")  # the sweep says "interrupted" if so
    client.set_tag(result["run_id"], "fit_seconds", str(result["fit_seconds"]))
    if reporter.stopped:
        # Tune stopped the trial: ASHA, its last epoch, or an interrupted sweep that `--resume` runs again. The run is
        # left resumable, so a trial run again goes on from its last checkpoint in the same MLflow run.
        info = Path(cfg.paths.models) / "run.json"
        write_json(info, {k: v for k, v in json.loads(info.read_text()).items() if k != "complete"})
        raise SystemExit(0)  # as Tune's report does: a stopped trial reports nothing more (not even "done")


def record_failure(cfg: object, tags: dict, error: Exception) -> None:
    """Mark the trial's MLflow run FAILED with the error; a trial that failed before its run existed (out of memory
    while building the network) gets one, so every trial of the sweep is in the table."""
    connect(cfg)
    client = mlflow.MlflowClient()
    ids = [r.info.run_id for r in trial_runs(client, tags) if "superseded_by" not in r.data.tags] or [
        create_run(cfg, data_digest(cfg.paths.prepared), flatten(cfg), {**tags, **node_tags(), "attempts": "1"})]
    for run_id in ids:
        client.set_tag(run_id, "error", f"{type(error).__name__}: {error}"[:5000])
        client.set_terminated(run_id, "FAILED")
