"""What a run records about itself: its name, tags (git commit, DVC experiment), params and data digest."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from seqpipe.tracking.store import bounded_http

# Files that differ from the commit without changing what ran: composing rewrites params.yaml (its content is logged
# as params); DVC rewrites dvc.lock and adds its outputs to .gitignore files.
GENERATED = ("params.yaml", "dvc.lock", ".gitignore")


def flatten(cfg: DictConfig) -> dict[str, str]:
    """Dotted keys to string values, as MLflow params. Where the run is tracked is not a param of the run, and the
    sweep settings (tune.*) are not either: a sweep logs them in its parent run."""
    out: dict[str, str] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix.rstrip(".")] = str(node)[:6000]

    walk({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "tune"}, "")
    out.pop("mlflow.tracking_uri", None)
    return out


# Vocabularies name their tokenizer by module path, and seqpipe.data.text_tokens was seqpipe.tokenize: the digest reads
# the new name as the old one, so data prepared before and after the rename (the same data) keeps one digest.
_RENAMED = (b'"seqpipe.data.text_tokens.', b'"seqpipe.tokenize.')


def data_digest(prepared_dir: str | Path) -> str:
    """sha256 over the prepared arrays, vocabulary and split: the exact data a model saw. meta.json is left out: it
    restates them (sizes, labels, train statistics) and names what they were made from, so data prepared before it
    existed keeps its digest and a model retrained on it is still compared with the champion trained on it."""
    digest = hashlib.sha256()
    for path in sorted(Path(prepared_dir).iterdir()):
        if path.is_file() and path.name != "meta.json":
            data = path.read_bytes()
            digest.update(path.name.encode())
            digest.update(data.replace(*_RENAMED) if path.suffix == ".json" else data)
    return digest.hexdigest()


def git_state(outputs: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The commit of the working directory and the tracked files that differ from it, leaving out generated files
    and the pipeline's `outputs` (folders; `dvc exp run` stages its reports); ("", []) outside a git repository."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "", []
    changed = [line[3:].split(" -> ")[-1] for line in status.splitlines() if line.strip()]
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True).stdout.strip()
    skip = [Path(os.path.relpath(Path(o).resolve(), top)).as_posix() for o in outputs]
    return head, [f for f in changed if Path(f).name not in GENERATED
                  and not any(f == d or f.startswith(f"{d}/") for d in skip)]


def run_name(cfg: DictConfig) -> str:
    """What ran, at a glance: <recipe>-<cell>-<layers>x<hidden>, e.g. imdb-bigru-1x128."""
    m = cfg.model
    return f"{cfg.recipe.name}-{'bi' if m.bidirectional else ''}{m.cell}-{m.num_layers}x{m.hidden_size}"


def run_tags(cfg: DictConfig, digest: str) -> dict[str, str]:
    """Tags a team filters and links by: recipe, task, cell, data, the git commit (MLflow's own tag, so the UI
    links it) and whether other tracked files differed from it, and the DVC experiment."""
    commit, changed = git_state(tuple(cfg.paths.values()))
    tags = {"recipe": cfg.recipe.name, "task": cfg.task, "cell": cfg.model.cell, "data.digest": digest}
    if commit:
        tags |= {"mlflow.source.git.commit": commit, "git.dirty": ", ".join(changed)[:5000] or "false"}
    if exp := os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`
        tags["dvc.exp_name"] = exp
    return tags


def create_run(cfg: DictConfig, digest: str, params: dict[str, str], tags: dict[str, str] | None = None) -> str:
    """A new run in the recipe's experiment, named for what runs (plus the start of its id), with its tags (and
    `tags`, e.g. `mlflow.parentRunId` for a trial of a sweep) and params; returns its id. The store must already be
    the current one (`connect`)."""
    client = mlflow.MlflowClient()
    experiment_id = experiment_id_for(client, cfg.mlflow.experiment)
    run_id = client.create_run(experiment_id, tags={**run_tags(cfg, digest), **(tags or {})}).info.run_id
    client.update_run(run_id, name=f"{run_name(cfg)}-{run_id[:6]}")
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params a call
        client.log_batch(run_id, params=items[start:start + 100])
    return run_id


def experiment_id_for(client: object, name: str) -> str:
    """The id of the MLflow experiment `name`, created if it does not exist yet."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created by a concurrent run in the meantime
        return client.get_experiment_by_name(name).experiment_id


def end_if_running(run_id: str, status: str, tracking_uri: str | None = None) -> bool:
    """End the run `run_id` as `status` (FAILED, KILLED) if it is still RUNNING; whether it did. Never raises: it runs
    on the way out of a failure, where the store may be what failed, and gives a store 5 s to answer."""
    with contextlib.suppress(Exception), bounded_http(5.0):
        client = mlflow.MlflowClient(tracking_uri)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status)
            return True
    return False


@contextlib.contextmanager
def ended_if_failed(run_id: str | None) -> Iterator[None]:
    """End the run `run_id` as FAILED (KILLED on Ctrl-C) when the block raises and the run is still RUNNING, so that
    training that fails to start never leaves a run RUNNING (Lightning ends it itself once fitting has begun)."""
    try:
        yield
    except BaseException as e:
        if run_id is not None:  # the store may be what failed (after minutes of retries): the error that matters is `e`
            end_if_running(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
