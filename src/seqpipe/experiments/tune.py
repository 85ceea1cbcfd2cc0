"""`seqpipe tune`: a Ray Tune sweep of the config space in conf/tune/. Every trial is `train.run` (the same training
as `seqpipe train`) with a callback that reports each validation to Tune, so ASHA can stop it early. MLflow gets
one parent run per sweep and a nested child run per trial; the sweep ends with a results table, a plot, and the best
trial written as a Hydra experiment file (conf/experiment/best_<recipe>.yaml) that the DVC pipeline trains."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

import mlflow
import ray
import yaml
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf, open_dict
from ray import tune
from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
from ray.tune import ExperimentAnalysis
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from seqpipe.atomic import atomic_path, write_json, write_text
from seqpipe.config import conf_dir, validate
from seqpipe.data.meta import prepared_meta
from seqpipe.errors import SeqpipeError
from seqpipe.experiments.sweep_common import STOP_WAIT_S, metric_name
from seqpipe.experiments.trainable import trainable
from seqpipe.tracking.runs import create_run, data_digest
from seqpipe.tracking.store import connect, sqlite_path

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint", "lograndint")
LISTS = ("choice", "grid")  # distributions over a list of values
STATE = "sweep.json"  # in the sweep folder: what --resume needs (config, parent run, space)
# Sections a trial may not change: where things are stored and how the sweep itself runs.
FIXED = ("paths", "mlflow", "tune", "register", "serve", "evaluate")


# ---------------------------------------------------------------------------------------------------------- space
def space_items(space: DictConfig | dict) -> list[tuple[str, str, list]]:
    """(dotted config key, distribution, its arguments) for each leaf of the nested space."""
    items: list[tuple[str, str, list]] = []

    def walk(node: object, prefix: str) -> None:
        key = prefix.rstrip(".")
        if not isinstance(node, dict) or not node:
            leaf = key.rpartition(".")[2]
            raise SeqpipeError(f"tune.space.{key}: {leaf!r} is not a distribution; give {{distribution: values}} with "
                               f"one of: {', '.join(DISTRIBUTIONS)}")
        if set(node) & set(DISTRIBUTIONS):
            if len(node) != 1:
                raise SeqpipeError(f"tune.space.{key} has {sorted(node)}: give one distribution")
            kind, args = next(iter(node.items()))
            items.append((key, kind, args))
            return
        for k, v in node.items():
            walk(v, f"{prefix}{k}.")

    walk(OmegaConf.to_container(space, resolve=True) if isinstance(space, DictConfig) else space, "")
    return items


def check_space(cfg: DictConfig) -> list[tuple[str, str, list]]:
    """Refuse a space that cannot be sampled or that names keys the config does not have; every value a trial can
    draw must pass the same checks as `seqpipe train` (the ends of a range stand for it)."""
    items = space_items(cfg.tune.space)
    if not items:
        raise SeqpipeError("tune.space is empty: give at least one config key to sample (see conf/tune/)")
    for key, kind, args in items:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if parent.split(".")[0] in FIXED:
            raise SeqpipeError(f"tune.space cannot sample {key!r}: {', '.join(FIXED)} are the same for every trial")
        if not isinstance(node, DictConfig) or leaf not in node:
            where = (f"the keys under {parent!r} are: {', '.join(node)}" if isinstance(node, DictConfig)
                     else f"its sections are: {', '.join(k for k in cfg if k not in FIXED)}")
            raise SeqpipeError(f"tune.space names {key!r}, which is not a key of the config; {where}")
        if not isinstance(args, list) or not args:
            raise SeqpipeError(f"tune.space.{key}.{kind} is empty: give "
                               f"{'the values' if kind in LISTS else '[low, high]'}")
        if kind not in LISTS:
            if len(args) != 2 or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in args):
                raise SeqpipeError(f"tune.space.{key}.{kind}={args} must be two numbers [low, high]")
            low, high = args
            if low >= high:
                raise SeqpipeError(f"tune.space.{key}.{kind}=[{low}, {high}]: low must be below high")
            if kind.startswith("log") and low <= 0:
                raise SeqpipeError(f"tune.space.{key}.{kind}=[{low}, {high}] includes values <= 0, which have no "
                                   "logarithm: make low > 0, or use uniform/randint")
            if kind in ("randint", "lograndint") and not all(isinstance(a, int) for a in args):
                raise SeqpipeError(f"tune.space.{key}.{kind}={args} must be integers")
        for value in args:  # each value (or end of the range) makes a config seqpipe train accepts
            trial = OmegaConf.create(OmegaConf.to_container(cfg))
            OmegaConf.update(trial, key, value)
            try:
                validate(trial)
            except SeqpipeError as e:
                raise SeqpipeError(f"tune.space.{key}: the value {value!r} is refused: {e}") from None
    return items


def ray_space(items: list[tuple[str, str, list]]) -> dict:
    make = {"choice": lambda a: tune.choice(a), "grid": lambda a: tune.grid_search(a),
            "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(a[0], a[1] + 1),  # Ray's integer upper bounds are exclusive
            "lograndint": lambda a: tune.lograndint(a[0], a[1] + 1)}
    return {key: make[kind](args) for key, kind, args in items}


# ---------------------------------------------------------------------------------------------------------- sweep
def check_address(address: str | None) -> None:
    """An address that does not answer is refused in seconds, naming it (ray.init would wait much longer)."""
    if address in (None, "", "auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SeqpipeError(f"tune.address={address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise SeqpipeError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): start it with "
                           "`ray start --head`, or fix tune.address (null runs Ray on this machine)") from None


def start_ray(cfg: DictConfig) -> None:
    address = cfg.tune.address
    # A reused worker waits this long for the trial before it to finish (Ray's default, 2 s, is shorter than a
    # trial takes to save and log after ASHA stops it, and Ray then fails the next trial instead of waiting).
    env = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": str(STOP_WAIT_S)}
    kwargs = {"include_dashboard": False, "configure_logging": True, "logging_level": "warning",
              "log_to_driver": True, "runtime_env": {"env_vars": env}}
    try:
        if address in (None, "", "local"):
            # address=local: a Ray of its own even where a `ray start` cluster runs on this machine (without it,
            # ray.init joins that cluster and refuses num_cpus)
            ray.init(address="local", num_cpus=os.cpu_count(), **kwargs)
        else:
            # Ray 2.60 turns token authentication on for `ray start` when ~/.ray/auth_token exists (any local sweep
            # writes one), but a client given an address sends the token only in token mode: turn it on likewise.
            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
            ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise SeqpipeError(f"cannot connect to the Ray cluster at {address}: {e}. Start one with `ray start --head`, "
                           "or set tune.address=null to run Ray on this machine") from None


def sweep_dirs(storage: Path) -> list[Path]:
    return sorted((p for p in storage.glob(f"*/{STATE}")), key=lambda p: p.stat().st_mtime) if storage.is_dir() else []


def _absolute_uri(uri: str) -> str:
    return f"sqlite:///{sqlite_path(uri).resolve()}" if uri.startswith("sqlite:///") else uri


def _scheduler(cfg: DictConfig):  # noqa: ANN202
    s = cfg.tune.scheduler
    # Rungs in epochs, not in reports: a trial run again (a lost worker, --resume) goes on from its checkpoint's
    # epoch, while Ray counts its reports from 1 again.
    return ASHAScheduler(time_attr="epoch", max_t=int(cfg.trainer.max_epochs),
                         grace_period=int(s.grace_period), reduction_factor=float(s.reduction_factor))


def check_settings(cfg: DictConfig) -> None:
    t = cfg.tune
    for key in ("num_samples", "cpus_per_trial"):
        if not isinstance(t[key], int | float) or isinstance(t[key], bool) or t[key] <= 0:
            raise SeqpipeError(f"tune.{key}={t[key]!r} must be a positive number")
    if t.address in (None, "", "local") and t.cpus_per_trial > (os.cpu_count() or 1):
        raise SeqpipeError(f"tune.cpus_per_trial={t.cpus_per_trial} but this machine has {os.cpu_count()} CPUs: no "
                           f"trial could start; set tune.cpus_per_trial={os.cpu_count()} or less")
    if t.max_concurrent is not None and (not isinstance(t.max_concurrent, int) or t.max_concurrent < 1):
        raise SeqpipeError(f"tune.max_concurrent={t.max_concurrent!r} must be a positive integer or null")
    if not isinstance(t.max_failures, int) or isinstance(t.max_failures, bool) or t.max_failures < -1:
        raise SeqpipeError(f"tune.max_failures={t.max_failures!r} must be an integer: 0 or more retries of a trial "
                           "whose worker or node is lost, or -1 to retry without end")
    if not isinstance(t.gpus_per_trial, int | float) or t.gpus_per_trial < 0:
        raise SeqpipeError(f"tune.gpus_per_trial={t.gpus_per_trial!r} must be 0 or more")
    if not isinstance(t.scheduler.grace_period, int) or t.scheduler.grace_period < 1:
        raise SeqpipeError(f"tune.scheduler.grace_period={t.scheduler.grace_period!r} must be a positive integer")
    if not isinstance(t.scheduler.reduction_factor, int | float) or t.scheduler.reduction_factor <= 1:
        raise SeqpipeError(f"tune.scheduler.reduction_factor={t.scheduler.reduction_factor!r} must be above 1")


def run(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = (), resume: bool = False) -> dict:
    """Run (or, with `resume`, continue) a sweep; return its summary (best trial, counts, folder). Everything is
    checked (config, space, Ray address, data, MLflow store) before anything is written."""
    storage = Path(cfg.tune.storage).resolve()
    if resume:
        found = [storage / cfg.tune.name / STATE] if cfg.tune.name else sweep_dirs(storage)[-1:]
        if not found or not found[0].is_file():
            raise SeqpipeError(f"no sweep to resume in {storage}" + (f" named {cfg.tune.name!r}" if cfg.tune.name
                               else "") + ": start one with `seqpipe tune [overrides]`")
        state = json.loads(found[0].read_text())
        cfg = OmegaConf.create(state["config"])  # the sweep's own config, whatever conf/ says now
        cfg.tune.setdefault("max_failures", 0)  # a sweep started before tune.max_failures retried nothing
    validate(cfg)
    check_settings(cfg)
    items = check_space(cfg)
    check_address(cfg.tune.address)
    prepared_meta(cfg)

    uri = connect(cfg)
    with open_dict(cfg):
        cfg.mlflow.tracking_uri = _absolute_uri(uri)
        for key in cfg.paths:
            cfg.paths[key] = str(Path(cfg.paths[key]).resolve())
    if resume:
        name, parent = state["name"], state["parent"]
        mlflow.MlflowClient().update_run(parent, status="RUNNING")
    else:
        name = cfg.tune.name or f"{cfg.recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"
        if (storage / name).exists():
            raise SeqpipeError(f"{storage / name} exists: continue it with `seqpipe tune --resume "
                               f"tune.name={name}`, or choose another tune.name")
        digest = data_digest(cfg.paths.prepared)
        space = {k: {kind: args} for k, kind, args in items}
        parent = create_run(cfg, digest, {"sweep.space": json.dumps(space), "sweep.num_samples":
                                          str(cfg.tune.num_samples), "sweep.overrides": " ".join(overrides)},
                            {"sweep": name, "sweep.role": "parent"})
        mlflow.MlflowClient().update_run(parent, name=f"sweep-{name}")
        write_json(storage / name / STATE, {"name": name, "parent": parent, "overrides": list(overrides),
                                            "config": OmegaConf.to_container(cfg)})
    sweep_dir = storage / name
    sweep = {"root": os.getcwd(), "dir": str(sweep_dir), "name": name, "parent": parent,
             "cpus": cfg.tune.cpus_per_trial}
    trial = tune.with_resources(trainable(OmegaConf.to_container(cfg), sweep),
                                {"cpu": cfg.tune.cpus_per_trial, "gpu": cfg.tune.gpus_per_trial})
    # A trial that fails by itself ends without a result (it is recorded failed, not retried: trial.run_trial), which
    # Tune would take for a trial that forgot to report the metric.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    t0 = time.perf_counter()
    start_ray(cfg)
    t1 = time.perf_counter()
    try:
        if resume:
            tuner = tune.Tuner.restore(str(sweep_dir), trial, resume_unfinished=True, resume_errored=False)
        else:
            tuner = tune.Tuner(
                trial, param_space=ray_space(items),
                tune_config=tune.TuneConfig(
                    metric=metric_name(cfg.monitor), mode="min", scheduler=_scheduler(cfg),
                    num_samples=int(cfg.tune.num_samples), reuse_actors=True,
                    # the generator holds the limit: Tune ignores max_concurrent_trials beside a search_alg that is
                    # not a Searcher (it warns, and runs as many trials as the CPUs allow)
                    search_alg=BasicVariantGenerator(random_state=int(cfg.seed),
                                                     max_concurrent=cfg.tune.max_concurrent or 0)),
                run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=1,
                                          failure_config=tune.FailureConfig(max_failures=int(cfg.tune.max_failures))))
        tuner.fit()
    finally:
        ray.shutdown()
    return finish(cfg, sweep_dir, name, parent, time.perf_counter() - t1, t1 - t0)


def finish(cfg: DictConfig, sweep_dir: Path, name: str, parent: str, wall: float, ray_start: float) -> dict:
    """Results table, plot and (once every trial has ended) the best trial's experiment file; logged to the parent
    run."""
    client = mlflow.MlflowClient()
    trials = ray_trials(sweep_dir)
    pending = sum(t.status not in ("TERMINATED", "ERROR") for t in trials.values())
    rows = trial_rows(client, cfg, parent)
    for row in rows:
        trial = trials.get(row["trial"])
        row["failures"] = trial.num_failures if trial else 0
        if trial and trial.status not in ("TERMINATED", "ERROR"):
            row["stopped"] = "interrupted"
        if trial and trial.status == "ERROR" and row["status"] == "RUNNING":  # no attempt of it lived to end its run
            row["status"] = "FAILED"
            row["error"] = (f"its worker or node was lost {trial.num_failures} times (tune.max_failures="
                            f"{cfg.tune.max_failures})")
            client.set_tag(row["run_id"], "error", row["error"])
            client.set_terminated(row["run_id"], "FAILED")
    table = results_csv(rows)
    write_text(sweep_dir / "results.csv", table)
    plot_sweep(rows, sweep_dir / "sweep.png", cfg.monitor)
    done = [r for r in rows if r["status"] == "FINISHED" and r["best"] is not None]
    best = min(done, key=lambda r: r["best"]) if done else None
    summary = {"sweep": name, "folder": str(sweep_dir), "trials": len(rows), "failed": sum(r["status"] == "FAILED"
               for r in rows), "stopped_early": sum(r["stopped"] == "asha" for r in rows), "unfinished": pending,
               "nodes": len({r["node"] for r in rows if r["node"]}), "retries": sum(r["failures"] for r in rows),
               "wall_seconds": round(wall, 1), "ray_start_seconds": round(ray_start, 1), "parent_run": parent,
               "fit_seconds_total": round(sum(r["fit_seconds"] for r in rows if r["fit_seconds"] is not None), 1)}
    if best:
        summary |= {"best": {"trial": best["trial"], cfg.monitor: best["best"], "values": best["values"],
                             "run_id": best["run_id"]}}
        if not pending:  # an interrupted sweep's best is not the sweep's best yet
            summary["experiment_file"] = str(write_experiment(cfg, best, name))
    write_json(sweep_dir / "summary.json", summary)
    client.log_artifact(parent, str(sweep_dir / "results.csv"))
    client.log_artifact(parent, str(sweep_dir / "sweep.png"))
    client.log_artifact(parent, str(sweep_dir / "summary.json"))
    for key in ("trials", "failed", "stopped_early", "wall_seconds"):
        client.log_metric(parent, f"sweep/{key}", summary[key])
    if best:
        client.log_metric(parent, f"sweep/best_{metric_name(cfg.monitor)}", best["best"])
    client.set_terminated(parent, "KILLED" if pending else "FINISHED")
    return summary


def ray_trials(sweep_dir: Path) -> dict:
    """Ray's saved view of each trial: its status (TERMINATED, ERROR; PENDING when an interrupted sweep would run it
    again) and num_failures (the times its worker or node was lost)."""
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # trials without results yet
    return {t.trial_id: t for t in ExperimentAnalysis(str(sweep_dir)).trials}


def trial_rows(client: object, cfg: DictConfig, parent: str) -> list[dict]:
    """One row per trial of the sweep whose parent run is `parent` (its child runs), from the trial's MLflow run:
    status, sampled values, best and last monitored value, epochs, the node it ran on (last). The run of an attempt
    that was lost and started afresh by the next one is left out. By parent, not by the `sweep` name tag: an earlier
    sweep of the same name (its folder removed since) has another parent, and its trials are not this sweep's."""
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent}' and tags.trial != ''", max_results=10000)
    rows = []
    for r in sorted(runs, key=lambda r: r.info.start_time):
        if "superseded_by" in r.data.tags:
            continue
        # one value per step: an attempt that goes on from a checkpoint may log again the epoch its last one logged
        steps = {m.step: m.value for m in sorted(client.get_metric_history(r.info.run_id, cfg.monitor),
                                                 key=lambda m: m.timestamp)}
        history = [steps[k] for k in sorted(steps)]
        values = {k.removeprefix("space."): v for k, v in r.data.tags.items() if k.startswith("space.")}
        rows.append({"trial": r.data.tags["trial"], "status": r.info.status, "values": values,
                     "best": min(history) if history else None, "last": history[-1] if history else None,
                     "epochs": len(history), "stopped": r.data.tags.get("stopped", ""),
                     "fit_seconds": float(r.data.tags["fit_seconds"]) if "fit_seconds" in r.data.tags else None,
                     "error": r.data.tags.get("error", "").splitlines()[0][:200] if r.data.tags.get("error") else "",
                     "node": r.data.tags.get("node.name", ""), "node_id": r.data.tags.get("node", ""),
                     "attempts": int(r.data.tags.get("attempts", "1")), "failures": 0, "run_id": r.info.run_id})
    return rows


def results_csv(rows: list[dict]) -> str:
    keys = sorted({k for r in rows for k in r["values"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trial", "status", *keys, "best", "last", "epochs", "stopped", "fit_seconds", "error", "node",
                "node_id", "attempts", "failures", "run_id"])
    for r in rows:
        w.writerow([r["trial"], r["status"], *(r["values"].get(k, "") for k in keys), r["best"], r["last"],
                    r["epochs"], r["stopped"], r["fit_seconds"], r["error"], r["node"], r["node_id"], r["attempts"],
                    r["failures"], r["run_id"]])
    return buf.getvalue()


def plot_sweep(rows: list[dict], out_png: Path, monitor: str) -> None:
    """Best validation value against hidden size, one line per depth, each point labelled with its cell; trials ASHA
    stopped are hollow, failed ones are marked x at the top."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    x_key = "model.hidden_size" if any("model.hidden_size" in r["values"] for r in rows) else None
    depth_key = "model.num_layers"
    scored = [r for r in rows if r["best"] is not None and math.isfinite(r["best"])]
    top = max((r["best"] for r in scored), default=1.0)
    for i, depth in enumerate(sorted({r["values"].get(depth_key, "-") for r in rows}, key=str)):
        color = f"C{i}"
        pts = sorted(((float(r["values"].get(x_key, 0)) if x_key else j, r) for j, r in enumerate(scored)
                      if r["values"].get(depth_key, "-") == depth), key=lambda p: p[0])
        if pts:
            ax.plot([p[0] for p in pts], [p[1]["best"] for p in pts], color=color, alpha=0.5,
                    label=f"{depth} layer{'s' if str(depth) != '1' else ''}")
        for x, r in pts:
            stopped = r["stopped"] == "asha"
            ax.scatter([x], [r["best"]], s=40, color="white" if stopped else color, edgecolors=color, zorder=3)
            if "model.cell" in r["values"]:
                ax.annotate(r["values"]["model.cell"], (x, r["best"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=color)
        failed = [r for r in rows if r["status"] == "FAILED" and r["values"].get(depth_key, "-") == depth]
        for r in failed:
            ax.scatter([float(r["values"].get(x_key, 0)) if x_key else 0], [top], marker="x", color=color, zorder=3)
    ax.scatter([], [], s=40, color="white", edgecolors="gray", label="stopped early by ASHA")
    ax.scatter([], [], marker="x", color="gray", label="failed (at the top)")
    if x_key:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(x_key or "trial")
    ax.set_ylabel(f"best {monitor}")
    ax.set_title("sweep: each trial's best validation value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def write_experiment(cfg: DictConfig, best: dict, name: str) -> Path:
    """conf/experiment/best_<recipe>.yaml: the recipe and the best trial's values, as overrides on top of it.
    The sweep's budget (trainer.*) is left out: the pipeline trains with the full trainer config."""
    values = OmegaConf.create()
    for key, value in best["values"].items():
        OmegaConf.update(values, key, yaml_value(value), force_add=True)
    path = conf_dir() / "experiment" / f"best_{cfg.recipe.name}.yaml"
    body = OmegaConf.to_yaml(OmegaConf.merge({"defaults": [{"override /recipe": cfg.recipe.name}]}, values))
    write_text(path, f"# @package _global_\n# Written by `seqpipe tune`: the best trial ({best['trial']}, best "
                     f"{cfg.monitor} {best['best']:.4f}) of sweep {name}.\n# Train and register it through the "
                     f"pipeline: seqpipe compose experiment=best_{cfg.recipe.name} && dvc repro\n{body}")
    return path


def yaml_value(text: str) -> object:
    """A sampled value as it was (the tags hold strings): 2 -> int, 0.003 -> float, gru -> str."""
    return yaml.safe_load(text)


def print_summary(summary: dict, monitor: str) -> None:
    out = sys.stderr
    nodes = f" on {summary['nodes']} Ray nodes" if summary.get("nodes", 0) > 1 else ""
    retries = f", {summary['retries']} attempt(s) lost with a worker or node" if summary.get("retries") else ""
    print(f"tune: sweep {summary['sweep']}: {summary['trials']} trials{nodes} in {summary['wall_seconds']:.0f} s, "
          f"{summary['stopped_early']} stopped early by ASHA, {summary['failed']} failed{retries}; results in "
          f"{summary['folder']}/results.csv and sweep.png (MLflow parent run {summary['parent_run']})", file=out)
    if summary.get("unfinished"):
        print(f"tune: {summary['unfinished']} trials did not finish: continue with `seqpipe tune --resume "
              f"tune.name={summary['sweep']}`", file=out)
    if "best" in summary:
        b = summary["best"]
        values = " ".join(f"{k}={v}" for k, v in sorted(b["values"].items()))
        so_far = " so far" if summary.get("unfinished") else ""
        print(f"tune: best trial{so_far} {b['trial']}: {monitor} {b[monitor]:.4f} with {values}", file=out)
        if "experiment_file" in summary:
            print(f"tune: wrote {summary['experiment_file']}; train and register it with `seqpipe compose "
                  f"experiment={Path(summary['experiment_file']).stem} && dvc repro`", file=out)
