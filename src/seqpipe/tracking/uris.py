"""Where the MLflow store is, as a URI: the one in use, how messages show it, an SQLite store's file. No MLflow
imports here: `seqpipe generate` finds a registered model's folder with these alone (seqpipe.serving.local)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

# models:/NAME@ALIAS or models:/NAME/VERSION (what the registry resolves; runs:/ and paths are other forms)
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def tracking_uri(cfg: DictConfig | None = None) -> str:
    """MLFLOW_TRACKING_URI wins over the config; the default is a SQLite store in the working directory."""
    default = cfg.mlflow.tracking_uri if cfg is not None else "sqlite:///mlflow.db"
    return os.environ.get("MLFLOW_TRACKING_URI") or default


def shown_uri(uri: str) -> str:
    """The URI for messages, without a password (http://user:secret@host -> http://user:***@host; database URIs
    such as postgresql+psycopg://user:secret@host/db too)."""
    return re.sub(r"^([\w+.-]+://[^/:@]+):[^/@]*@", r"\1:***@", uri)


def sqlite_path(uri: str) -> Path:
    """sqlite:///mlflow.db -> mlflow.db (relative to the working directory); sqlite:////abs/x.db -> /abs/x.db."""
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
