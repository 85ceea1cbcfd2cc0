"""The MLflow store: where it is, whether it answers (checked before a command changes anything), and pointing this
process at it without exporting the URI."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import get_model_name_and_version
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request
from omegaconf import DictConfig

from seqpipe.errors import SeqpipeError
from seqpipe.tracking.uris import shown_uri, sqlite_path, tracking_uri  # noqa: F401 (theirs too)

FIX = ("start the server, or point MLFLOW_TRACKING_URI (or mlflow.tracking_uri in conf/, or --tracking-uri) at a "
       "running store; nothing was changed")


def _check_server(uri: str, timeout_s: float, retries: int) -> None:
    creds = get_default_host_creds(uri)
    reason, t0 = "", time.monotonic()
    for attempt in range(retries + 1):
        try:  # our own loop, not MLflow's retries: theirs back off for minutes
            response = http_request(creds, "/health", "GET", max_retries=0, timeout=timeout_s)
            if response.status_code < 500:
                break
            reason = f"HTTP {response.status_code} from /health"
        except MlflowException as e:
            text = str(e)
            reason = ("connection refused" if "refused" in text.lower() else
                      f"no answer within {timeout_s:g} s" if "timed out" in text.lower() or "timeout" in text.lower()
                      else text.splitlines()[0][:200])
        if attempt < retries:
            time.sleep(1.0)
    else:
        raise SeqpipeError(f"the MLflow tracking server {shown_uri(uri)} does not answer ({reason}; {retries + 1} "
                           f"tries in {time.monotonic() - t0:.1f} s): {FIX}")
    try:  # it answers: can it read its own store, and may we?
        with bounded_http(timeout_s):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as e:
        first = str(e.message).splitlines()[0][:300]
        hint = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" if "401" in first or "403" in first
                else "check the server's log and its --backend-store-uri")
        raise SeqpipeError(f"the MLflow tracking server {shown_uri(uri)} answers but its store does not ({first}): "
                           f"{hint}; nothing was changed") from None


def _quick_check(path: Path, mode: str, timeout_s: float) -> tuple[str, set[str]]:
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=timeout_s)
    try:
        (verdict,) = con.execute("PRAGMA quick_check(1)").fetchone()
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()
    return verdict, tables


def _check_sqlite(uri: str, timeout_s: float, must_exist: bool) -> None:
    path = sqlite_path(uri)
    if not path.exists():
        if must_exist:
            raise SeqpipeError(f"no MLflow store at {path} ({uri}): run the pipeline first (`dvc repro`), or point "
                               "MLFLOW_TRACKING_URI (or --tracking-uri) at the store that holds your models")
        return  # MLflow creates it
    tables: set[str] = set()
    try:
        verdict, tables = _quick_check(path, "ro", timeout_s)
    except sqlite3.Error as e:
        verdict = str(e)
        if getattr(e, "sqlite_errorname", "") == "SQLITE_READONLY_ROLLBACK":
            # A writer was killed mid-transaction and left a hot journal: only a read-write open rolls it back (what
            # any MLflow writer would do next); the store is then as it was before that transaction.
            try:
                verdict, tables = _quick_check(path, "rw", timeout_s)
            except sqlite3.Error as e2:
                verdict = f"{e2}; a killed writer left {path.name}-journal, which needs write access to roll back"
    if verdict != "ok":
        raise SeqpipeError(f"{path} is not a readable MLflow store (sqlite: {verdict}); it may be truncated or "
                           "overwritten. Restore it from a backup, or move it away to start a new store; nothing was "
                           "changed")
    if tables and "alembic_version" not in tables:
        raise SeqpipeError(f"{path} is an SQLite database but not an MLflow store (no MLflow tables): point "
                           "MLFLOW_TRACKING_URI (or mlflow.tracking_uri) at your MLflow store")


def check_store(uri: str, timeout_s: float = 5.0, retries: int = 2, must_exist: bool = False) -> None:
    """Stop with one line that names the store and the fix when it does not answer or is damaged. Called before a
    command changes anything, and bounded: (retries + 1) x timeout_s plus a second between tries.
    `must_exist`: a command that only reads (generate, predict) refuses to create an empty SQLite store."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        _check_server(uri, timeout_s, retries)
    elif scheme == "sqlite":
        _check_sqlite(uri, timeout_s, must_exist)


def connect(cfg: DictConfig, must_exist: bool = False) -> str:
    """Check the configured store (mlflow.timeout_s, mlflow.retries) and point this process's MLflow at it."""
    uri = tracking_uri(cfg)
    check_store(uri, cfg.mlflow.timeout_s, cfg.mlflow.retries, must_exist)
    use_tracking_uri(uri)
    return uri


def run_exists(run_id: str) -> bool:
    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    return True


def require_run(run_id: str, what: str) -> None:
    """Refuse to go on when the store does not hold the run that `what` (a report file) names."""
    if not run_exists(run_id):
        raise SeqpipeError(f"{what} names MLflow run {run_id}, which the store {shown_uri(mlflow.get_tracking_uri())} "
                           "does not hold: the model was trained against another store. Point MLFLOW_TRACKING_URI at "
                           "that store, or retrain here with `dvc repro -f train`")


def check_model_files(model_uri: str) -> None:
    """Refuse a registered model (models:/NAME@ALIAS or models:/NAME/VERSION) whose files are not where the store
    says, naming the folder that is missing: a file store's artifacts (mlruns/) moved or deleted. Call it once the
    model is known to be registered; remote artifact stores are left to MLflow."""
    if not model_uri.startswith("models:/"):
        return
    client = mlflow.MlflowClient()
    location = client.get_model_version_download_uri(*get_model_name_and_version(client, model_uri))
    parts = urlsplit(location)
    if parts.scheme not in ("", "file") or Path(parts.path).exists():
        return
    missing = Path(parts.path)
    while not missing.parent.exists() and missing.parent != missing:
        missing = missing.parent
    raise SeqpipeError(f"the files of {model_uri} are missing: {missing} does not exist (the store expects them in "
                       f"{parts.path}); put the folder back where it was, or register the model again "
                       "(`dvc repro -f register`)")


@contextlib.contextmanager
def restored_env(*keys: str) -> Iterator[None]:
    """Put these environment variables back as they were (set or unset) when the block ends."""
    before = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def bounded_http(timeout_s: float, retries: int = 0) -> Iterator[None]:
    """MLflow's HTTP calls inside the block give up after `timeout_s` and `retries` (theirs: 120 s, 7 retries)."""
    keys = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(timeout_s))),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries)}
    with restored_env(*keys):
        os.environ.update(keys)
        yield


@contextlib.contextmanager
def store_lost(uri: str, during: str, kept: str) -> Iterator[None]:
    """One line instead of a traceback when the store, which answered when the command began (`connect`), stops
    answering for longer than MLflow's client retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default: about 4
    minutes; a PostgreSQL restart behind a server takes seconds and is carried through by them)."""
    try:
        with restored_env("MLFLOW_HTTP_REQUEST_MAX_RETRIES"):  # what StoreGone sets once the store is gone
            yield
    except MlflowException as e:
        text = str(e.message)
        status = re.search(r"too many (5\d\d) error responses|error code (5\d\d)", text)
        reason = (f"the server answers HTTP {status[1] or status[2]}: its own store does not, see its log" if status
                  else "connection refused" if "refused" in text.lower() else text.splitlines()[0][:200])
        raise SeqpipeError(f"the MLflow store {shown_uri(uri)} stopped answering during {during} ({reason}); {kept}"
                           ) from None


def env_unchanged() -> contextlib.AbstractContextManager[None]:
    """Undo what MLflow and Lightning's MLFlowLogger write to MLFLOW_TRACKING_URI (they export the URI they
    use), so one run's store never becomes the next run's default in the same process."""
    return restored_env("MLFLOW_TRACKING_URI")


def use_tracking_uri(uri: str) -> None:
    """Point this process's MLflow calls at `uri` without exporting it: mlflow.set_tracking_uri also sets
    MLFLOW_TRACKING_URI, which would then override every later config in the process (tests, notebooks)."""
    with env_unchanged():
        mlflow.set_tracking_uri(uri)
