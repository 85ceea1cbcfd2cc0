"""MLflow plumbing shared by the stages: where the store is, what to record about a run."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def tracking_uri(cfg: DictConfig | None = None) -> str:
    """MLFLOW_TRACKING_URI wins over the config; the default is a SQLite store in the working directory."""
    default = cfg.mlflow.tracking_uri if cfg is not None else "sqlite:///mlflow.db"
    return os.environ.get("MLFLOW_TRACKING_URI") or default


def flatten(cfg: DictConfig) -> dict[str, str]:
    """Dotted keys to string values, as MLflow params."""
    out: dict[str, str] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix.rstrip(".")] = str(node)[:6000]

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def data_digest(prepared_dir: str | Path) -> str:
    """sha256 over the prepared arrays and vocabulary: the exact data a model saw."""
    digest = hashlib.sha256()
    for path in sorted(Path(prepared_dir).iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def git_commit() -> str:
    """The commit of the working directory, marked `-dirty` when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.strip() + ("-dirty" if dirty.strip() else "")


@contextlib.contextmanager
def env_unchanged() -> Iterator[None]:
    """Undo what MLflow and Lightning's MLFlowLogger write to MLFLOW_TRACKING_URI (they export the URI they
    use), so one run's store never becomes the next run's default in the same process."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def use_tracking_uri(uri: str) -> None:
    """Point this process's MLflow calls at `uri` without exporting it: mlflow.set_tracking_uri also sets
    MLFLOW_TRACKING_URI, which would then override every later config in the process (tests, notebooks)."""
    import mlflow

    with env_unchanged():
        mlflow.set_tracking_uri(uri)
