"""`seqpipe generate` without the wait: a registered model found in the SQLite store and loaded from its folder as
weights, vocabulary and tokenizer, without importing MLflow, pandas or Lightning (together ~4 s of a 2-core
machine's start-up, against ~1.5 s for torch itself; bench/startup.py measures both).

It takes what it can answer for and hands everything else back (None) to the MLflow path, which explains what is
wrong: a store that is not SQLite (an HTTP server), a model that is not in it, files that moved, a task without a
lean module (seqpipe.tasks.LEAN), a model saved before models carried their meta."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch
import yaml

from seqpipe.data.vocab import load_with_tokenizer
from seqpipe.serving.served import DEFAULT_LIMITS, Served, upgrade_state_dict
from seqpipe.tasks import LEAN
from seqpipe.tracking.uris import MODEL_URI, sqlite_path


def registered_folder(model_uri: str, tracking_uri: str) -> tuple[Path, str, str] | None:
    """(model folder, "NAME/VERSION", run id) of `models:/NAME@ALIAS` or `models:/NAME/VERSION` in an SQLite store
    whose artifacts are on this machine, read from the store's tables (read-only); None otherwise."""
    m = MODEL_URI.match(model_uri)
    if not m or not tracking_uri.startswith("sqlite:///"):
        return None
    db = sqlite_path(tracking_uri)
    if not db.is_file():
        return None
    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5) as con:
            version = m["version"]
            if m["alias"]:
                rows = con.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                                   (m["name"], m["alias"])).fetchall()
                version = rows[0][0] if len(rows) == 1 else None
            rows = con.execute("SELECT storage_location, run_id, status FROM model_versions WHERE name = ? AND "
                               "version = ?", (m["name"], version)).fetchall() if version is not None else []
    except sqlite3.Error:  # an older schema, a locked or damaged file: the MLflow path says what is wrong
        return None
    if len(rows) != 1 or rows[0][2] != "READY" or not rows[0][0]:
        return None
    location, run_id = rows[0][0], rows[0][1] or ""
    folder = Path(unquote(urlsplit(location).path) if location.startswith("file:") else location)
    if "://" in location and not location.startswith("file:") or not (folder / "MLmodel").is_file():
        return None
    return folder, f"{m['name']}/{version}", run_id


def load(model_uri: str, tracking_uri: str, command: str) -> tuple[Served, object] | None:
    """The model `model_uri` names, loaded lean, and its task's lean module (which runs the command); None when the
    MLflow path must load it (see the module's docstring)."""
    found = registered_folder(model_uri, tracking_uri)
    if found is None:
        return None
    folder, name, run_id = found
    mlmodel = yaml.load((folder / "MLmodel").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    task = (mlmodel.get("metadata") or {}).get("task")
    artifacts = {k: folder / v["path"] for k, v in
                 (mlmodel.get("flavors", {}).get("python_function", {}).get("artifacts") or {}).items()}
    if command != "generate" or task not in LEAN or "weights" not in artifacts or "vocab" not in artifacts:
        return None
    saved = torch.load(artifacts["weights"], map_location="cpu", weights_only=True)
    meta = saved.get("meta")
    if not meta or meta.get("task") != task:  # saved before models carried their meta: the pyfunc reads it
        return None
    lean = importlib.import_module(LEAN[task])
    served = Served()
    served.meta, served.model, served.run_id = meta, name, run_id
    served.limits = {**DEFAULT_LIMITS, **saved.get("limits", {})}  # as the pyfunc reads them
    served.vocab, served.tokenizer = load_with_tokenizer(artifacts["vocab"])
    served.net = lean.build_net(meta, saved["model"])
    served.net.load_state_dict(upgrade_state_dict(saved["state_dict"]))
    served.net.eval()
    return served, lean

