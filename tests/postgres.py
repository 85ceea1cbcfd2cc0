"""A real PostgreSQL and `mlflow server` on it for the tests, started by seqpipe's own team server code
(seqpipe.tracking.team_server, what `seqpipe team-server start` runs) in a temporary folder of its own; the tests
that use it are skipped, with the reason, where PostgreSQL or its Python driver is not installed."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from seqpipe.tracking import team_server
from seqpipe.tracking.team_server import Team


def require_postgres() -> None:
    if shutil.which("initdb") is None and not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL is not installed (no initdb): apt-get install postgresql (.ci/run installs it)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed: pip install -e '.[dev]'")


@contextlib.contextmanager
def team(**start: object) -> Iterator[Team]:
    """PostgreSQL (fsync off: a test machine's crash loses nothing of value) and `mlflow server` on free ports,
    in a folder under /tmp (pytest's own are private to root, and PostgreSQL runs as the postgres user there).
    Stops what it started, and only that: the server's process group, then the cluster by its data folder."""
    require_postgres()
    folder = Path(tempfile.mkdtemp(prefix="seqpipe-pg-"))
    try:
        yield team_server.start(folder, port=team_server.free_port(), fsync=False, **start)
    finally:
        if (folder / "team.json").is_file():
            started = Team.load(folder)
            team_server.stop_mlflow(started)
            if started.pgdata.is_dir() and team_server.postgres_running(started):
                team_server.pg_ctl(started, "stop")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def second_server(first: Team, db: str) -> Iterator[Team]:
    """Another `mlflow server` in the same cluster, on a new empty database `db` (its own folder and artifacts)."""
    team_server.create_database(first, db)
    folder = Path(first.folder) / db
    folder.mkdir()
    other = dataclasses.replace(first, folder=str(folder), port=team_server.free_port(), pid=None, db=db)
    try:
        team_server.start_mlflow(other)
        yield other
    finally:
        team_server.stop_mlflow(other)
