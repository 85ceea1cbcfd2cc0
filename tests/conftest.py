"""Shared fixtures: a tiny real corpus and configs composed from the project's own conf/ (Hydra compose)."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from seqpipe import evaluate, fetch, prepare, register, train
from seqpipe.config import compose

ROOT = Path(__file__).resolve().parents[1]

# The test files that take longest under `make test-full` (seconds of work, measured with --durations on 2 cores),
# collected first: with --no-loadscope-reorder (the Makefile) xdist's loadfile hands files to the two workers in
# collection order (by default: by number of tests, which put these few-test files last), so the long ones start
# at once, the short ones fill in at the end, and neither worker is left running a long file alone.
LONGEST_FIRST = ("test_dvc_pipeline.py", "test_tune.py", "test_tune_cluster.py", "test_ddp.py", "test_postgres_team.py",
                 "test_reliability.py", "test_speech.py", "test_hostile_serving.py", "test_dag.py", "test_study.py",
                 "test_dvc_remote.py", "test_catalogue.py", "test_team.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def _shipped_conf() -> Path:
    """conf/ as the repo ships it: without conf/local/, the overrides a developer's `seqpipe compose key=value`
    saved in this checkout (they would change every composed test config)."""
    if not (ROOT / "conf" / "local").exists():
        return ROOT / "conf"
    copy = Path(tempfile.mkdtemp(prefix="seqpipe-conf-")) / "conf"
    shutil.copytree(ROOT / "conf", copy, ignore=shutil.ignore_patterns("local"))
    return copy


CONF = Path(os.environ.setdefault("SEQPIPE_TEST_CONF", str(_shipped_conf())))  # one copy, shared by subprocesses

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test-full` runs two workers (pytest -n 2) on 2 cores
    # one core each: two workers whose torch each spreads over every core slow each other ~20x; the processes a test
    # starts (training, DDP ranks, servers) inherit OMP_NUM_THREADS
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
WORDS = ("the king my lord good night what say you sir love heart fair sweet death noble speak "
         "come hence thou art and shall not be so well here now").split()


def write_corpus(directory: Path, n_docs: int = 5, lines: int = 60, seed: int = 0) -> Path:
    """A few small plain-text 'plays': speaker lines and verse drawn from a fixed word list."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for d in range(n_docs):
        out = []
        for _ in range(lines):
            speaker = rng.choice(["ROMEO", "JULIET", "NURSE", "KING"])
            verse = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
            out.append(f"{speaker}:\n{verse.capitalize()}.\n")
        (directory / f"play{d}.txt").write_text("\n".join(out), encoding="utf-8")
    return directory


TINY = [
    "recipe=text_file",
    "data.batch_size=4", "data.bptt=32", "data.eval_batch_size=2",
    "model.embedding_dim=16", "model.hidden_size=32",
    "optim.lr=0.01", "optim.warmup_steps=0",
    "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "train.log_every_n_steps=5",
    "evaluate.sample_tokens=40",
    "prepare.val_fraction=0.2", "prepare.test_fraction=0.2",
]


# For runs whose test checks what a run leaves (folders, MLflow runs, loaded modules), not what it learns: one epoch
# of two batches, one validation batch, a short sample.
FEW_BATCHES = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
               "evaluate.sample_tokens=5"]


def tiny_overrides(root: Path) -> list[str]:
    """Overrides that point every path of a run into `root` and keep the run to seconds."""
    return [*TINY, f"recipe.fetch.paths=[{root / 'corpus'}]", f"paths.downloads={root / 'downloads'}",
            f"paths.raw={root / 'data/raw'}", f"paths.prepared={root / 'data/prepared'}",
            f"paths.models={root / 'models'}", f"paths.reports={root / 'reports'}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}"]


def here_overrides(root: Path) -> list[str]:
    """`tiny_overrides`, but naming the corpus relative to the working directory (`root`): prepared data records
    the recipe's settings, so a `clone` of the folder, worked on from inside it, was prepared from the same ones."""
    return [o if not o.startswith("recipe.fetch.paths=") else "recipe.fetch.paths=[corpus]"
            for o in tiny_overrides(root)]


@pytest.fixture
def tiny_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DictConfig:
    """A composed config for a seconds-long run on a tiny corpus in tmp_path (MLflow in tmp_path too)."""
    write_corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts under the working directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return compose(tiny_overrides(tmp_path), config_dir=CONF)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny language model of `here_overrides` (text_file, 2 epochs), trained once a session: fetched, prepared,
    trained, evaluated and registered (seqpipe-text_file v1, champion) in a store of its own, inside `root`. Tests
    read it as it is, or work on a `clone` of `root` (registering more versions, damaging files)."""
    root = tmp_path_factory.mktemp("tiny_lm")
    write_corpus(root / "corpus")
    with working_dir(root):
        done = run_stages(compose(here_overrides(root), config_dir=CONF))
    return {"root": root, **done}


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[Path]:
    """Run inside `path` (MLflow writes artifacts under the working directory), with no MLFLOW_TRACKING_URI."""
    old, uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(old)
        if uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = uri


POS, NEG, FILL = ["good", "great", "lovely", "superb"], ["bad", "awful", "boring", "dull"], \
    ["the", "film", "was", "quite", "a", "plot", "and", "cast", "really", "very"]


def write_reviews(path: Path, n: int = 600, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment", "site"])
        for _ in range(n):
            label = rng.choice(["neg", "pos"])
            words = [rng.choice(FILL) for _ in range(rng.randint(3, 25))]
            words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label == "pos" else NEG))
            w.writerow([" ".join(words) + "!", label, rng.choice(["siteA", "siteB"])])


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A .tar.gz archive of {member name: bytes} (fake sdists of the recipes' sources)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def run_pipeline(root: Path, overrides: list[str], store: Path | None = None) -> dict:
    """fetch -> prepare -> train -> evaluate -> register with every path under `root` (MLflow: `store`)."""
    cfg = compose([*overrides, f"paths.raw={root}/data/raw", f"paths.prepared={root}/data/prepared",
                   f"paths.models={root}/models", f"paths.reports={root}/reports",
                   f"mlflow.tracking_uri=sqlite:///{store or root / 'mlflow.db'}", "trainer.enable_progress_bar=false",
                   "trainer.enable_model_summary=false"], config_dir=CONF)
    return run_stages(cfg)


def run_stages(cfg: DictConfig) -> dict:
    """The five stages on a composed config: what prepare, train, evaluate and register returned."""
    fetch.run(cfg)
    stats = prepare.run(cfg)
    trained = train.run(cfg)
    metrics = evaluate.run(cfg)
    registered = register.run(cfg)
    return {"cfg": cfg, "stats": stats, "train": trained, "metrics": metrics, "registered": registered}


def clone(src: Path, dst: Path) -> Path:
    """A copy of a project folder (data, models, reports, MLflow stores and artifacts) that stands alone: every path
    into `src` that its SQLite stores hold (artifact locations, model version sources, params) names `dst` instead,
    so a test that registers, trains or deletes in the copy leaves a shared fixture's folder as it was."""
    shutil.copytree(src, dst, symlinks=True)
    old, new = str(src), str(dst)
    for db in dst.rglob("*.db"):
        with contextlib.closing(sqlite3.connect(db)) as con:
            tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in [c[1] for c in con.execute(f'PRAGMA table_info("{table}")')
                               if any(k in c[2].upper() for k in ("CHAR", "TEXT", "CLOB"))]:
                    con.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                                f'WHERE instr("{column}", ?) > 0', (old + "/", new + "/", old + "/"))
                    con.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?', (new, old))
            con.commit()
    for mlmodel in dst.rglob("MLmodel"):  # what a logged model records of where it was logged from
        mlmodel.write_text(mlmodel.read_text().replace(old + "/", new + "/"))
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(root: Path, timeout_s: float = 90) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend, artifacts served from `root`) on a free 127.0.0.1 port; yields its
    URL and stops its whole process group (the server starts workers of its own)."""
    import urllib.request

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-consumer processes left behind
    log_path = root / "mlflow-server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/server.db",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def models_serve(model_uri: str, tracking_uri: str, root: Path, workers: int = 1,
                 env: dict | None = None) -> Iterator[str]:
    """`mlflow models serve` of a registered model on a free 127.0.0.1 port (`workers` processes, `env` added to
    its environment); yields its URL once /ping answers and stops its process group after."""
    with models_serve_process(model_uri, tracking_uri, root, workers, env) as (url, _):
        yield url


@contextlib.contextmanager
def models_serve_process(model_uri: str, tracking_uri: str, root: Path, workers: int = 1,
                         env: dict | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """As `models_serve`, yielding the server's process too (its process group holds the workers)."""
    import urllib.request

    port, bin_dir = free_port(), str(Path(sys.executable).parent)  # the server runs uvicorn from the env's bin/
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    log = root / "serve.log"
    proc = subprocess.Popen([f"{bin_dir}/mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, f"mlflow models serve exited:\n{log.read_text()[-2000:]}"
                time.sleep(0.5)
        yield url, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def post_json(url: str, body: bytes) -> tuple[int, dict]:
    """POST a JSON body; (status, decoded answer), for error statuses too."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
