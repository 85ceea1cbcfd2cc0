"""The tracking store checks every command makes first, and what a run records about itself."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import CONF, free_port

from seqpipe.config import compose
from seqpipe.errors import SeqpipeError
from seqpipe.tracking.runs import data_digest, git_state, run_name
from seqpipe.tracking.store import check_store, shown_uri


def test_a_port_where_nothing_listens_is_reported_within_seconds():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(SeqpipeError, match=rf"the MLflow tracking server {uri} does not answer \(connection refused; "
                                           r"3 tries in [\d.]+ s\): start the server, or point MLFLOW_TRACKING_URI"):
        check_store(uri, timeout_s=2, retries=2)
    assert time.monotonic() - start < 10


def test_sqlite_store_checks(tmp_path):
    missing = tmp_path / "none.db"
    check_store(f"sqlite:///{missing}")  # a command that writes (train) may create it ...
    with pytest.raises(SeqpipeError, match="no MLflow store at"):
        check_store(f"sqlite:///{missing}", must_exist=True)  # ... one that only reads says where to look
    assert not missing.exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SeqpipeError, match="garbage.db is not a readable MLflow store .*file is not a database"):
        check_store(f"sqlite:///{garbage}")


def test_a_store_whose_writer_was_killed_mid_transaction_is_rolled_back_and_opens(tmp_path):
    """SIGKILL during an MLflow write leaves a hot journal; a read-only check cannot roll it back (SQLite says
    "attempt to write a readonly database"), and training killed at that moment must still resume."""
    import sqlite3
    import sys

    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE alembic_version (v TEXT); CREATE TABLE runs (x TEXT);"
                      "INSERT INTO runs VALUES ('kept');")
    con.close()
    writer = ("import os, signal, sqlite3, sys; con = sqlite3.connect(sys.argv[1]); con.execute('PRAGMA cache_size=1');"
              "con.execute('BEGIN'); [con.execute('INSERT INTO runs VALUES (?)', ('x' * 500,)) for _ in range(2000)];"
              "os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", writer, str(db)]).returncode == -9
    assert (tmp_path / "mlflow.db-journal").stat().st_size > 0  # hot: the half-written transaction's undo log
    check_store(f"sqlite:///{db}")
    assert sqlite3.connect(db).execute("SELECT x FROM runs").fetchall() == [("kept",)]
    assert not (tmp_path / "mlflow.db-journal").exists()


def test_passwords_stay_out_of_messages():
    assert shown_uri("https://alice:s3cret@mlflow.example.com/x") == "https://alice:***@mlflow.example.com/x"
    assert shown_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


def test_git_state_ignores_generated_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert git_state() == ("", [])  # not a repository
    for cmd in (["init", "-q"], ["add", "-A"]):
        (tmp_path / "params.yaml").write_text("a: 1\n")
        (tmp_path / "train.py").write_text("print(1)\n")
        subprocess.run(["git", *cmd], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "params.yaml").write_text("a: 2\n")  # composing rewrites it: not a change of code
    assert git_state() == (head, [])
    (tmp_path / "train.py").write_text("print(2)\n")
    assert git_state() == (head, ["train.py"])


@pytest.mark.parametrize("overrides,name", [
    ([], "shakespeare-gru-1x256"),
    (["recipe=imdb"], "imdb-bigru-1x128"),
    (["model.cell=rnn", "model.num_layers=3", "model.hidden_size=64"], "shakespeare-rnn-3x64"),
])
def test_run_names_say_what_ran(overrides, name):
    assert run_name(compose(overrides, config_dir=CONF)) == name


def test_git_state_ignores_pipeline_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text("{}")
    subprocess.run(["git", "add", "-A"], check=True)  # staged, as `dvc exp run` stages the pipeline's reports
    assert git_state() == (head, ["reports/metrics.json"])
    assert git_state(("reports",)) == (head, [])
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state((str(tmp_path / "reports"),)) == (head, ["code.py"])  # absolute output paths work too


def test_the_data_digest_covers_the_data_files_not_meta_json(tmp_path):
    (tmp_path / "train.npy").write_bytes(b"ids")
    (tmp_path / "vocab.json").write_text("{}")
    before = data_digest(tmp_path)
    (tmp_path / "meta.json").write_text('{"task": "lm"}')  # restates the files: older data keeps its digest
    assert data_digest(tmp_path) == before
    (tmp_path / "train.npy").write_bytes(b"other ids")
    assert data_digest(tmp_path) != before
