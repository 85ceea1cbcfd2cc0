"""A team tracking server on this machine: a PostgreSQL cluster in a folder (`.team/` by default) and `mlflow server`
on it, the artifacts stored and served by the server (clients need no access to its disk). `seqpipe team-server
start|stop` and the tests use the same functions, so what the tests exercise is what a team starts."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from seqpipe.errors import SeqpipeError

USER = DB = "mlflow"  # the database user and database the server uses
SOCKET_PATH_MAX = 90  # a unix socket's path must fit in 107 bytes: with a longer data folder, TCP only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name: str) -> str:
    """A PostgreSQL program: from PATH, else Debian's /usr/lib/postgresql/<version>/bin (not on PATH there)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise SeqpipeError(f"PostgreSQL's {name} is not installed: install the server (Debian/Ubuntu: apt-get install "
                           "postgresql), or point MLFLOW_TRACKING_URI at a team server that runs elsewhere")
    return found


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user (Debian's package creates it)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(_as_owner(cmd), capture_output=True, text=True)
    if done.returncode != 0:
        raise SeqpipeError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")


@dataclass
class Team:
    """Where the team server lives and how it is reached; saved as <folder>/team.json (0600: it holds the database
    password)."""

    folder: str
    pg_port: int
    port: int
    host: str
    password: str
    pid: int | None = None  # the mlflow server's process (and process group)
    db: str = DB

    @property
    def pgdata(self) -> Path:
        return Path(self.folder) / "pgdata"

    @property
    def db_uri(self) -> str:
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.pg_port}/{self.db}"

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{self.port}"

    def save(self) -> None:
        path = Path(self.folder) / "team.json"
        path.write_text(json.dumps(asdict(self), indent=1))
        path.chmod(0o600)

    @classmethod
    def load(cls, folder: Path) -> Team:
        path = folder / "team.json"
        if not path.is_file():
            raise SeqpipeError(f"no team server in {folder} ({path} not found): start one with `seqpipe team-server "
                               "start`")
        return cls(**json.loads(path.read_text()))


def init_postgres(team: Team, fsync: bool = True) -> None:
    """A new cluster in <folder>/pgdata listening on 127.0.0.1 only, with password logins, a user and a database for
    MLflow. `fsync=False` (tests) trades crash safety of the machine for speed; a clean stop or restart loses
    nothing either way."""
    shutil.rmtree(team.pgdata, ignore_errors=True)  # what an initdb that did not finish left (no PG_VERSION)
    team.pgdata.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(team.pgdata, "postgres", "postgres")
        if subprocess.run(_as_owner(["test", "-w", str(team.pgdata)])).returncode != 0:
            raise SeqpipeError(f"the postgres user cannot reach {team.pgdata} (a folder above it is private, as "
                               "/root is): put the team server elsewhere with --dir")
    pwfile = Path(team.folder) / "pw.tmp"  # not in pgdata: initdb wants it empty
    pwfile.write_text(team.password + "\n")
    try:
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        _run([pg_bin("initdb"), "-D", str(team.pgdata), "-U", "postgres", f"--pwfile={pwfile}",
              "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", *([] if fsync else ["--no-sync"])],
             "initdb")
    finally:
        pwfile.unlink(missing_ok=True)
    sockets = str(team.pgdata) if len(str(team.pgdata)) < SOCKET_PATH_MAX else ""
    with open(team.pgdata / "postgresql.conf", "a") as conf:  # appended: the file stays the postgres user's
        conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {team.pg_port}\nunix_socket_directories = "
                   f"'{sockets}'\n" + ("" if fsync else "fsync = off\nsynchronous_commit = off\n"))
    pg_ctl(team, "start")
    _sql(team, f"CREATE USER {USER} PASSWORD '{team.password}'")  # a token_hex: no quoting needed
    create_database(team, team.db)


def _sql(team: Team, statement: str) -> None:
    import psycopg  # the driver MLflow's PostgreSQL store uses: an extra (dev, team), not every user needs it

    with psycopg.connect(host="127.0.0.1", port=team.pg_port, user="postgres", password=team.password,
                         dbname="postgres", autocommit=True) as con:
        con.execute(statement)


def create_database(team: Team, name: str) -> None:
    """An empty database owned by the MLflow user in the team's cluster (a store to migrate into, for one)."""
    _sql(team, f'CREATE DATABASE "{name}" OWNER {USER}')


def pg_ctl(team: Team, action: str) -> None:
    """`pg_ctl start|stop|restart` of the team's cluster, waiting until it is done (fast: open sessions are closed,
    committed work is kept)."""
    log = team.pgdata / "postgres.log"  # inside the data folder: the postgres user writes it
    _run([pg_bin("pg_ctl"), "-D", str(team.pgdata), "-l", str(log), "-w", "-t", "60", "-m", "fast", action],
         f"pg_ctl {action} ({log})")


def postgres_running(team: Team) -> bool:
    return subprocess.run(_as_owner([pg_bin("pg_ctl"), "-D", str(team.pgdata), "status"]),
                          capture_output=True).returncode == 0


def start_mlflow(team: Team, timeout_s: float = 120) -> None:
    """`mlflow server` on the team's database, serving artifacts from <folder>/artifacts, in a process group of its
    own (its workers with it); returns once /health answers."""
    folder = Path(team.folder)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-consumer processes that outlive the server
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"  # the server runs uvicorn from the env's bin/
    log_path = folder / "mlflow.log"
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--backend-store-uri", team.db_uri, "--artifacts-destination",
             str(folder / "artifacts"), "--host", team.host, "--port", str(team.port), "--workers", "1"],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    team.pid = proc.pid
    team.save()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{team.url}/health", timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_mlflow(team)
                raise SeqpipeError(f"mlflow server did not start on {team.url}; its log {log_path} ends with:\n"
                                   f"{log_path.read_text()[-2000:]}") from None
            time.sleep(0.3)


def _ours(pid: int) -> bool:
    """Whether `pid` is still the mlflow server we started (a pid can be reused by another program)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(part.endswith(b"mlflow") for part in cmdline) and b"server" in cmdline


def stop_mlflow(team: Team, timeout_s: float = 30) -> None:
    """Stop the server's whole process group (uvicorn's workers too), and only that."""
    if team.pid is None or not _ours(team.pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(team.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while True:  # until the whole group is gone: a worker left behind would hold the port
            with contextlib.suppress(ChildProcessError):
                os.waitpid(team.pid, os.WNOHANG)  # our child when this process started it: reap it
            os.killpg(team.pid, 0)  # ProcessLookupError once no process of the group is left
            if time.monotonic() > deadline + 10:
                break  # left to the system: a zombie whose parent has not reaped it yet
            if time.monotonic() > deadline:
                os.killpg(team.pid, signal.SIGKILL)
            time.sleep(0.1)
    team.pid = None
    team.save()


def start(folder: Path, port: int = 5000, host: str = "127.0.0.1", pg_port: int | None = None,
          fsync: bool = True) -> Team:
    """Start (creating on first use) the team server in `folder`: PostgreSQL, then `mlflow server` on it."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # PostgreSQL runs as the postgres user, who must pass through the folder
        folder.chmod(folder.stat().st_mode | 0o011)
    if (folder / "team.json").is_file():
        team = Team.load(folder)
        if team.pid is not None and _ours(team.pid):
            raise SeqpipeError(f"the team server in {folder} is running already (mlflow server pid {team.pid}, "
                               f"{team.url}); stop it first with `seqpipe team-server stop`")
        team.port, team.host = port, host
    else:
        team = Team(str(folder), pg_port or free_port(), port, host, secrets.token_hex(16))
    team.save()
    if not (team.pgdata / "PG_VERSION").is_file():
        init_postgres(team, fsync)
    elif not postgres_running(team):
        pg_ctl(team, "start")
    start_mlflow(team)
    return team


def stop(folder: Path) -> Team:
    """Stop the team server in `folder`: mlflow server, then PostgreSQL (the data stays for the next start)."""
    team = Team.load(folder.resolve())
    stop_mlflow(team)
    if postgres_running(team):
        pg_ctl(team, "stop")
    return team
