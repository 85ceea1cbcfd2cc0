"""A DVC remote: one run pushed, and a teammate's fresh `git clone` pulls it instead of recomputing. Real DVC and git
in tmp_path, the remote a local folder (S3, GCS and SSH remotes take the same commands: docs/pipeline.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, run_stages, working_dir
from test_dvc_pipeline import make_repo, ran, sh

from seqpipe import register
from seqpipe.cli.commands import main
from seqpipe.config import load_params
from seqpipe.errors import SeqpipeError

pytestmark = pytest.mark.slow
STAGES = ["config", "fetch", "prepare", "train", "evaluate", "register"]
GENERATE = ["seqpipe", "generate", "--prompt", "ROMEO:", "--max-new-tokens", "40", "--temperature", "0"]


def timed(*cmd: str, cwd: Path, times: dict, name: str) -> subprocess.CompletedProcess:
    start = time.monotonic()
    done = sh(*cmd, cwd=cwd)
    times[name] = time.monotonic() - start
    return done


def run_and_commit(root: Path) -> subprocess.CompletedProcess:
    """The pipeline's six stages on params.yaml, in this process, then `dvc commit`: the dvc.lock `dvc repro` writes
    (tests/test_dvc_pipeline runs `dvc repro` itself). The same run through `dvc repro` takes 60 s on 2 cores, each
    stage a new Python that imports torch, Lightning and MLflow; here they are imported once."""
    with working_dir(root):
        assert main(["compose", "--check"]) == 0  # the config stage
        run_stages(load_params())
    return sh("dvc", "commit", "-f", cwd=root)


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny pipeline run once in `origin`, pushed to a default remote (a local folder) and committed; then a
    teammate's fresh `git clone` of it (no data, no checkpoints, no MLflow store) after `dvc pull`. With what the
    clone held before the pull, what DVC printed there, and how long each step took."""
    base = tmp_path_factory.mktemp("remote")
    (base / "origin").mkdir()
    origin, remote, clone = make_repo(base / "origin"), base / "storage", base / "teammate"
    # The project's own .gitignore: what it keeps out of git is what a teammate's clone lacks.
    shutil.copy(ROOT / ".gitignore", origin / ".gitignore")
    times: dict[str, float] = {}
    start = time.monotonic()
    run_and_commit(origin)
    times["run"] = time.monotonic() - start
    sh("dvc", "remote", "add", "-d", "storage", str(remote), cwd=origin)  # the one command: .dvc/config, committed
    to_push = sh("dvc", "status", "--cloud", cwd=origin).stdout
    timed("dvc", "push", cwd=origin, times=times, name="push")
    sh("git", "add", "-A", cwd=origin)  # dvc.lock, params.yaml, the reports DVC does not cache, .dvc/config
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run", cwd=origin)

    sh("git", "clone", "-q", str(origin), str(clone), cwd=base)
    before = sorted(str(p.relative_to(clone)) for p in clone.rglob("*") if ".git" not in p.parts)
    timed("dvc", "pull", cwd=clone, times=times, name="pull")
    status = timed("dvc", "status", cwd=clone, times=times, name="status")
    again = timed("dvc", "repro", cwd=clone, times=times, name="repro in the clone")
    files, size = folder_size(remote)
    print(f"\nremote: {files} files, {size / 1e6:.2f} MB; " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return {"origin": origin, "clone": clone, "remote": remote, "to_push": to_push, "before": before,
            "status": status, "again": again, "times": times}


def test_a_fresh_clone_pulls_every_output_and_reruns_nothing(shared):
    origin, clone = shared["origin"], shared["clone"]
    assert "Data and pipelines are up to date." in sh("dvc", "status", cwd=origin).stdout  # as `dvc repro` left it
    # `dvc status --cloud` said what `dvc push` sends: every cached output (data, checkpoints, evaluate's files)
    assert "new:" in shared["to_push"] and "models" in shared["to_push"]
    assert shared["remote"].is_dir() and any(shared["remote"].rglob("*"))

    # a fresh clone: the committed files only
    for missing in ("data/raw", "data/prepared", "models", "reports/evaluate", "mlflow.db"):
        assert missing not in shared["before"], missing
    # the reports DVC does not cache are committed, so the clone has them before any pull
    for report in ("reports/params_ok.txt", "reports/data.json", "reports/train.json", "reports/metrics.json",
                   "reports/registry.json", "reports/history.csv", "params.yaml", "conf/local/overrides.yaml"):
        assert report in shared["before"], f"{report} is not committed: a clone lacks it and `dvc repro` reruns"

    # after `dvc pull`: the same checkpoints and data, byte for byte; everything up to date; nothing ran
    for path in ("models/checkpoints/best.ckpt", "data/prepared/meta.json", "data/raw/documents.jsonl"):
        assert (clone / path).read_bytes() == (origin / path).read_bytes(), path
    assert "Data and pipelines are up to date." in shared["status"].stdout
    text = shared["again"].stdout + shared["again"].stderr
    assert ran(shared["again"]) == [] and "Running stage" not in text
    assert all(f"Stage '{stage}' didn't change, skipping" in text for stage in STAGES), text
    assert not (clone / "mlflow.db").exists()  # the register stage is up to date; the MLflow store is not pulled


def test_generate_answers_from_the_pulled_checkpoint_as_the_registered_model_does(shared, monkeypatch, capsys):
    """The clone has no MLflow store; `--model models/` builds the model `register` logged from the pulled
    checkpoint, data and params.yaml: greedy decoding gives the registered champion's text."""
    with ThreadPoolExecutor(2) as pool:  # two processes at once: each spends seconds importing torch and MLflow
        registered = pool.submit(sh, *GENERATE, "--model", "models:/seqpipe-text_file@champion", cwd=shared["origin"])
        pulled = pool.submit(sh, *GENERATE, "--model", "models/", cwd=shared["clone"])
        registered, pulled = registered.result(), pulled.result()
    assert pulled.stdout.startswith("ROMEO:") and len(pulled.stdout) > len("ROMEO:\n")
    assert pulled.stdout == registered.stdout
    monkeypatch.chdir(shared["clone"])  # the checkpoint file itself, in this process
    assert main([*GENERATE[1:], "--model", "models/checkpoints/best.ckpt"]) == 0
    assert capsys.readouterr().out == registered.stdout


def test_the_clone_without_a_store_names_it_and_the_checkpoint(shared, monkeypatch, capsys):
    """The MLflow store is not pushed: a models:/ URI in the clone names the store it lacks and `--model models/`;
    the register stage, up to date for DVC, refuses to run there (its training run is in the origin's store)."""
    clone = shared["clone"]
    monkeypatch.chdir(clone)
    store = f"sqlite:///{clone / 'mlflow.db'}"
    assert main(["generate", "--model", "models:/seqpipe-text_file@champion", "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert f"no MLflow store at {clone / 'mlflow.db'}" in err and "--model models/" in err
    with working_dir(clone), pytest.raises(SeqpipeError, match="no MLflow store at"):
        register.run(load_params())
    assert not (clone / "mlflow.db").exists()  # neither created an empty store


def test_a_checkpoint_is_refused_without_its_params_or_with_other_data(shared, tmp_path, monkeypatch, capsys):
    ckpt = shared["clone"] / "models" / "checkpoints" / "best.ckpt"
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    assert main(["generate", "--model", str(ckpt)]) == 2
    assert "read with the pipeline's params.yaml, which is not here" in capsys.readouterr().err

    other = shutil.copytree(shared["clone"], tmp_path / "other", ignore=shutil.ignore_patterns(".git", ".dvc"))
    path = other / "data" / "prepared" / "vocab.json"
    vocab = json.loads(path.read_text())
    path.write_text(json.dumps({**vocab, "tokens": [*vocab["tokens"], "é"]}))  # prepared again from more text
    monkeypatch.chdir(other)
    assert main(["generate", "--model", "models/"]) == 2
    assert "was trained on other data than data/prepared holds" in capsys.readouterr().err
