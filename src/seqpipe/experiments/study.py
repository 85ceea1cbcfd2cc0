"""`seqpipe study gating`: the tanh RNN, the GRU and the LSTM trained side by side on one recipe with matched
parameter counts (and, for recipes with a sequence length such as `adding`, at each of `study.lengths`).

The recipe is fetched and prepared once (per length) into the study's work folder. The reference budget is the
parameter count of the LSTM at `model.hidden_size`; every cell gets the hidden size whose network (the task's own
`build_net`) has the nearest count. Each run is `train.run` with gradient flow on (seqpipe.models.gradflow), tested with
the task's `evaluate`, and tracked as an MLflow child run of one parent run; nothing is registered. The table and
plots (seqpipe.experiments.study_report) go to `<study.out>/<study>-<recipe>/`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import lightning.pytorch as L
import mlflow
import torch
from mlflow.entities import Metric
from omegaconf import DictConfig, OmegaConf, open_dict

from seqpipe import fetch, prepare, train
from seqpipe.config import CELLS, validate
from seqpipe.data.meta import prepared_meta
from seqpipe.errors import SeqpipeError
from seqpipe.evaluate import flat_metrics, load_checkpoint
from seqpipe.experiments.study_report import write_report
from seqpipe.models.gradflow import GradientFlow, check_net
from seqpipe.tasks import get_task
from seqpipe.tracking.runs import create_run, data_digest
from seqpipe.tracking.store import connect, sqlite_path, use_tracking_uri

STUDIES = ("gating",)
REFERENCE = "lstm"  # the cell whose parameter count at model.hidden_size every cell matches


def check(cfg: DictConfig, name: str) -> None:
    """The study's name and settings, refused with the fix before any work."""
    if name not in STUDIES:
        raise SeqpipeError(f"no study called {name!r}; the studies are: {', '.join(STUDIES)}")
    validate(cfg)
    s = cfg.study
    if not s.cells or any(c not in CELLS for c in s.cells):
        raise SeqpipeError(f"study.cells={list(s.cells or [])} must list cells among: {', '.join(CELLS)}")
    if lengths_of(cfg) is not None and (not s.lengths or any(not isinstance(t, int) or t < 2 for t in s.lengths)):
        raise SeqpipeError(f"study.lengths={s.lengths}: give sequence lengths of at least 2 steps, e.g. [50, 100]")
    for key in ("parallel", *(["threads"] if s.threads is not None else [])):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise SeqpipeError(f"study.{key}={s[key]!r} must be a positive integer")
    if cfg.model.bidirectional:
        raise SeqpipeError("a study measures the gradient that travels back through time from a sequence's last step "
                           "(train.gradient_flow), which a bidirectional encoder does not have: add "
                           "model.bidirectional=false (with model.pooling=last the loss reads the last step alone)")
    if cfg.model.tie_weights:
        raise SeqpipeError("the study varies model.hidden_size, which model.tie_weights=true ties to "
                           "model.embedding_dim: set model.tie_weights=false")


def lengths_of(cfg: DictConfig) -> list[int] | None:
    """study.lengths for a recipe whose data has a sequence length (recipe.fetch.length); None for the others."""
    return list(cfg.study.lengths or []) if "length" in cfg.recipe.fetch else None


def with_values(cfg: DictConfig, values: dict) -> DictConfig:
    """A copy of the config with dotted keys set."""
    out = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(out):
        for key, value in values.items():
            OmegaConf.update(out, key, value, force_add=True)
    return out


def prepare_data(cfg: DictConfig, work: Path, length: int | None) -> DictConfig:
    """Fetch and prepare the recipe (at `length`) into the work folder, as the pipeline's stages do."""
    folder = work / "data" / (f"T{length}" if length else "all")
    values = {"paths.raw": str(folder / "raw"), "paths.prepared": str(folder / "prepared"),
              "paths.reports": str(folder)}
    if length:
        values |= {"recipe.fetch.length": length, **({"recipe.length": length} if "length" in cfg.recipe else {})}
    data_cfg = with_values(cfg, values)
    fetch.run(data_cfg)
    prepare.run(data_cfg)
    return data_cfg


def param_count(cfg: DictConfig, meta: dict, cell: str, hidden: int) -> int:
    task = get_task(cfg.task)
    net = task.build_net(meta, task.net_config(with_values(cfg, cell_values(cell, hidden))))
    check_net(net)  # a network gradient flow cannot measure is refused here, before any training
    return sum(p.numel() for p in net.parameters())


def cell_values(cell: str, hidden: int) -> dict:
    return {"model.cell": cell, "model.hidden_size": hidden, **({"model.nonlinearity": "tanh"} if cell == "rnn"
                                                               else {})}


def matched_size(count: object, target: int) -> int:
    """The hidden size h >= 1 whose count(h) is nearest to `target`; count grows with h."""
    hi = 1
    while count(hi) < target:
        hi *= 2
    lo = max(1, hi // 2)
    while lo < hi:  # the smallest h with count(h) >= target
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if count(mid) >= target else (mid + 1, hi)
    return min((h for h in (hi - 1, hi) if h >= 1), key=lambda h: (abs(count(h) - target), h))


def match_cells(cfg: DictConfig, meta: dict) -> tuple[int, dict[str, tuple[int, int]]]:
    """The reference parameter count and each cell's (hidden size, parameter count)."""
    target = param_count(cfg, meta, REFERENCE, cfg.model.hidden_size)
    sizes = {}
    for cell in cfg.study.cells:
        count = cache(lambda h, cell=cell: param_count(cfg, meta, cell, h))
        hidden = cfg.model.hidden_size if cell == REFERENCE else matched_size(count, target)
        sizes[cell] = (hidden, count(hidden))
    return target, sizes


def run_config(data_cfg: DictConfig, cell: str, hidden: int, folder: Path) -> DictConfig:
    """One run's config: the cell at its hidden size, gradient flow on, the study's budget, its own folders."""
    budget = {f"trainer.{k}": v for k, v in data_cfg.study.trainer.items() if v is not None}
    cfg = with_values(data_cfg, {**cell_values(cell, hidden), **budget, "train.gradient_flow": True,
                                 "train.gradient_flow_every": 1, "train.resume": False,
                                 "trainer.enable_progress_bar": False, "trainer.enable_model_summary": False,
                                 "paths.models": str(folder / "models"), "paths.reports": str(folder / "reports")})
    validate(cfg)
    return cfg


def run(cfg: DictConfig, name: str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the study; return where its table and plots are and one row per run."""
    check(cfg, name)
    study = f"{name}-{cfg.recipe.name}"
    work, out_dir = Path(cfg.study.work).resolve() / study, Path(cfg.study.out) / study
    cfg = with_values(cfg, {f"paths.{k}": str(Path(v).resolve()) for k, v in cfg.paths.items()})
    uri = connect(cfg)  # a store that does not answer stops the study before the data work
    if uri.startswith("sqlite:///"):  # the same store from a worker process, whatever its working directory
        uri = f"sqlite:///{sqlite_path(uri).resolve()}"
    cfg = with_values(cfg, {"mlflow.tracking_uri": uri})
    lengths = lengths_of(cfg)
    datasets = [prepare_data(cfg, work, t) for t in (lengths or [None])]
    target, sizes = match_cells(cfg, prepared_meta(datasets[0]))
    shown = ", ".join(f"{c} {h} ({n:,})" for c, (h, n) in sizes.items())
    print(f"study {study}: {REFERENCE} at hidden size {cfg.model.hidden_size} has {target:,} parameters; hidden "
          f"sizes (parameters): {shown}", file=sys.stderr)

    threads = cfg.study.threads or max(1, (os.cpu_count() or 1) // cfg.study.parallel)
    parent = create_run(cfg, ",".join(data_digest(d.paths.prepared) for d in datasets),
                        {"study.name": study, "study.reference_params": str(target), "study.overrides":
                         " ".join(overrides), "study.threads": str(threads),
                         **{f"study.hidden_size.{c}": str(h) for c, (h, _) in sizes.items()}},
                        {"study": study, "study.role": "parent", "cell": ",".join(sizes)})
    client = mlflow.MlflowClient()
    client.update_run(parent, name=f"study-{study}")
    specs = []
    for data_cfg, length in zip(datasets, lengths or [None]):
        for cell, (hidden, params) in sizes.items():
            label = f"{cell}" + (f" T={length}" if length else "")
            folder = work / "runs" / label.replace(" ", "-").replace("=", "")
            shutil.rmtree(folder, ignore_errors=True)
            tags = {"mlflow.parentRunId": parent, "study": study, "study.cell": cell,
                    "study.hidden_size": str(hidden), "study.params": str(params),
                    **({"study.length": str(length)} if length else {})}
            specs.append({"config": OmegaConf.to_container(run_config(data_cfg, cell, hidden, folder)),
                          "tags": tags, "label": label, "threads": threads, "index": len(specs) + 1,
                          "length": length, "cell": cell, "hidden_size": hidden, "params": params})
    for spec in specs:
        spec |= {"total": len(specs), "study_pid": os.getpid()}
    t0, status = time.perf_counter(), "FAILED"
    try:
        rows = train_all(specs, cfg.study.parallel)
        about = {"study": study, "overrides": list(overrides), "reference": REFERENCE, "reference_hidden":
                 cfg.model.hidden_size, "reference_params": target,
                 "budget": {k: specs[0]["config"]["trainer"][k] for k in cfg.study.trainer},  # as the runs had it
                 "parallel": cfg.study.parallel, "threads": threads, "parent_run": parent,
                 "wall_seconds": round(time.perf_counter() - t0), "experiment": cfg.mlflow.experiment,
                 "monitor": cfg.monitor}
        files = write_report(rows, about, out_dir)
        for path in files:
            client.log_artifact(parent, str(path))
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(parent, status)
    print(f"study {study}: {len(rows)} runs in {about['wall_seconds']} s; table and plots in {out_dir}",
          file=sys.stderr)
    return {"folder": str(out_dir), "files": [str(p) for p in files], "rows": rows, "parent_run": parent}


def train_all(specs: list[dict], parallel: int) -> list[dict]:
    """Every run: in this process one after another, or `parallel` at a time in worker processes."""
    if parallel == 1 or len(specs) == 1:
        before = torch.get_num_threads()
        try:
            return [train_one(spec) for spec in specs]
        finally:
            torch.set_num_threads(before)
    # spawn: a fresh interpreter per worker (forking a process that has started torch's threads is unsafe)
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        # the longest sequences first, so that the runs left at the end, when a worker may idle, are short ones
        longest_first = sorted(specs, key=lambda s: -(s["length"] or 0))
        futures = {s["index"]: pool.submit(train_one, s) for s in longest_first}
        try:
            return [futures[spec["index"]].result() for spec in specs]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


class Progress(L.Callback):
    """One line per epoch: which run, its epoch and the monitored value. A worker whose study process has gone
    (killed) stops at the end of the epoch instead of training on for nobody."""

    def __init__(self, label: str, monitor: str, study_pid: int):
        self.label, self.monitor, self.study_pid = label, monitor, study_pid

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if os.getpid() != self.study_pid and os.getppid() != self.study_pid:
            trainer.should_stop = True
        if not trainer.sanity_checking:
            value = float(trainer.callback_metrics.get(self.monitor, float("nan")))
            print(f"study: {self.label}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}, step "
                  f"{trainer.global_step}, {self.monitor} {value:.4g}", file=sys.stderr, flush=True)


def train_one(spec: dict) -> dict:
    """One run of the study (here or in a worker): train with gradient flow, test, record; a row of the table."""
    torch.set_num_threads(spec["threads"])
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # each run's lines are the study's own
    cfg = OmegaConf.create(spec["config"])
    head = f"study: run {spec['index']}/{spec['total']} ({spec['label']}, hidden {spec['hidden_size']}, " \
           f"{spec['params']:,} parameters)"
    print(f"{head} started", file=sys.stderr, flush=True)
    flow = GradientFlow(cfg.train.gradient_flow_every)
    result = train.run(cfg, [flow, Progress(spec["label"], cfg.monitor, spec["study_pid"])], spec["tags"])
    meta = prepared_meta(cfg)
    out_dir = Path(cfg.paths.reports) / "evaluate"
    out_dir.mkdir(parents=True, exist_ok=True)
    module = load_checkpoint(result["best_checkpoint"], meta)
    metrics = flat_metrics(get_task(cfg.task).evaluate(cfg, module, train.build_datamodule(cfg, meta), out_dir))
    use_tracking_uri(cfg.mlflow.tracking_uri)
    client = mlflow.MlflowClient()
    client.log_batch(result["run_id"], metrics=[Metric(k, v, int(time.time() * 1000), result["steps"])
                                                for k, v in metrics.items() if v == v and abs(v) != float("inf")])
    steps = [(m.step, m.value) for m in client.get_metric_history(result["run_id"], "train/loss_step")]
    val = [(m.step, m.value) for m in client.get_metric_history(result["run_id"], cfg.monitor)]
    epochs = sorted(flow.profiles)
    print(f"{head} done in {result['fit_seconds']:.0f} s: test/loss {metrics['test/loss']:.4g}", file=sys.stderr,
          flush=True)
    return {**{k: spec[k] for k in ("length", "cell", "hidden_size", "params")}, "run_id": result["run_id"],
            "metrics": metrics, "best_val_loss": result["best_val_loss"], "epochs": result["epochs"],
            "steps": result["steps"], "fit_seconds": result["fit_seconds"], "train_curve": sorted(steps),
            "val_curve": sorted(val), "flow_first": flow.profiles[epochs[0]].tolist() if epochs else [],
            "flow_last": flow.profiles[epochs[-1]].tolist() if epochs else []}
