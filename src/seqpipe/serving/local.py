"""`seqpipe generate` and `seqpipe predict --text` without the wait: a registered model found in the SQLite store and
loaded from its folder as weights, vocabulary and tokenizer, without importing MLflow, pandas or Lightning (together
~4-5 s of a 2-core machine's start-up, against ~1.2 s for torch itself; bench/startup.py measures both).

It takes what it can answer for and hands everything else back (None) to the MLflow path, which explains what is
wrong: a store that is not SQLite (an HTTP server), a model that is not in it, files that moved, a task without a
lean module (seqpipe.tasks.LEAN) or that another command answers with, inputs that are not text, a model saved before
models carried their meta."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sqlite3
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch
import yaml

from seqpipe.data.vocab import load_with_tokenizer
from seqpipe.serving.served import Served
from seqpipe.tasks import LEAN, task_rules
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
    """The model `model_uri` names, loaded lean, and its task's lean module (`build_net`, and `run_cli` for
    `seqpipe generate` or `answer_rows` for `seqpipe predict`); None when the MLflow path must load it (see the
    module's docstring)."""
    found = registered_folder(model_uri, tracking_uri)
    if found is None:
        return None
    folder, name, run_id = found
    mlmodel = yaml.load((folder / "MLmodel").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    task = (mlmodel.get("metadata") or {}).get("task")
    pyfunc = mlmodel.get("flavors", {}).get("python_function", {})
    artifacts = {k: folder / v["path"] for k, v in (pyfunc.get("artifacts") or {}).items()}
    if task not in LEAN or "weights" not in artifacts or "vocab" not in artifacts:  # a vocabulary: text inputs
        return None
    lean = importlib.import_module(LEAN[task])
    if lean.COMMAND != command:  # the MLflow path names the command that answers with it
        return None
    saved = torch.load(artifacts["weights"], map_location="cpu", weights_only=True)
    meta = saved.get("meta")
    if not meta or meta.get("task") != task:  # saved before models carried their meta: the pyfunc reads it
        return None
    warn_environment(folder, pyfunc.get("python_version"))
    served = Served()
    served.load_saved(saved, meta, lean.build_net)
    served.model, served.run_id, served.long_inputs = name, run_id, task_rules(task).long_inputs
    served.vocab, served.tokenizer = load_with_tokenizer(artifacts["vocab"])
    return served, lean


def environment_mismatches(folder: Path, python_version: str | None) -> list[str]:
    """What differs between this environment and the one the model in `folder` was registered from: each package
    pinned in its requirements.txt (register pins torch and mlflow) that is missing or at another version here, and
    the Python minor version (MLmodel's)."""
    reqs = folder / "requirements.txt"
    found = []
    for line in reqs.read_text().splitlines() if reqs.is_file() else []:
        name, pinned, want = line.strip().partition("==")
        if not pinned:
            continue
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have is None or have.split("+")[0] != want:
            found.append(f"{name}=={want} (here: {have or 'not installed'})")
    here = platform.python_version()
    if python_version and python_version.split(".")[:2] != here.split(".")[:2]:
        found.append(f"Python {python_version} (here: {here})")
    return found


def warn_environment(folder: Path, python_version: str | None) -> None:
    """One warning line when the model was registered in another environment than this one, as MLflow's load_model
    warns (without its cost: it scans every installed distribution's files)."""
    if found := environment_mismatches(folder, python_version):
        print(f"seqpipe: warning: the model was registered with {', '.join(found)}; its answers may differ: install "
              "the same versions (`mlflow.pyfunc.get_model_dependencies` lists them)", file=sys.stderr)
