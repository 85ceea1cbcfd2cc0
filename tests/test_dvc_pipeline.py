"""`dvc repro` in a real DVC repo in tmp_path: the stages run, a rerun is a no-op, params are tracked by key."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONF, FEW_BATCHES, ROOT, TINY, clone, free_port, write_corpus
from mlflow import MlflowClient
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def sh(*cmd: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", **(env or {})}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the project as a git + DVC repo, set up as a user would for their own text: `seqpipe compose` with
    the tiny settings, which it saves in conf/local/overrides.yaml."""
    return make_repo(tmp_path)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A `repo` after its first `dvc repro`, made once for the tests that start there (each works on a `clone`), and
    what that repro printed."""
    root = make_repo(tmp_path_factory.mktemp("reproduced"))
    return root, sh("dvc", "repro", cwd=root)


def make_repo(tmp_path: Path) -> Path:
    for name in ("src", "dvc.yaml", ".dvcignore", "pyproject.toml"):
        src = ROOT / name
        (shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
         if src.is_dir() else shutil.copy(src, tmp_path / name))
    shutil.copytree(CONF, tmp_path / "conf")
    write_corpus(tmp_path / "corpus")
    (tmp_path / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    sh("dvc", "config", "hydra.enabled", "true", cwd=tmp_path)
    sh("seqpipe", "compose", *TINY, *FEW_BATCHES, "recipe.fetch.paths=[corpus]", cwd=tmp_path)
    sh("git", "add", "-A", cwd=tmp_path)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=tmp_path)
    return tmp_path


def ran(out: subprocess.CompletedProcess) -> list[str]:
    return [line.split("'")[1] for line in (out.stdout + out.stderr).splitlines()
            if line.startswith("Running stage '")]


def test_repro_runs_then_is_a_noop_and_params_rerun_only_what_they_touch(reproduced, tmp_path):
    repo, first = clone(reproduced[0], tmp_path / "repo"), reproduced[1]
    assert sorted(ran(first)) == ["config", "evaluate", "fetch", "prepare", "register", "train"]
    assert (repo / "reports" / "metrics.json").is_file() and (repo / "reports" / "registry.json").is_file()
    assert ran(sh("dvc", "repro", cwd=repo)) == []

    # A model parameter, as a DVC experiment (Hydra composes params.yaml): data stages are not rerun, and the
    # experiment builds on the overrides `seqpipe compose` saved (the user's recipe and sizes), not on conf/ alone.
    exp = sh("dvc", "exp", "run", "-n", "wider", "-S", "model.hidden_size=24", cwd=repo)
    assert ran(exp) == ["train", "evaluate", "register"]  # not config, fetch or prepare
    params = OmegaConf.load(repo / "params.yaml")
    assert params.model.hidden_size == 24 and params.recipe.name == "text_file" and params.data.bptt == 32
    assert "24" in sh("dvc", "exp", "show", "--no-pager", "--csv", cwd=repo).stdout
    # the runs say which experiment and which commit they come from (params.yaml differing is not "dirty")
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    run = client.get_run(json.loads((repo / "reports" / "train.json").read_text())["run_id"])
    head = sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()
    assert run.data.tags["dvc.exp_name"] == "wider" and run.data.tags["mlflow.source.git.commit"] == head
    assert run.data.tags["git.dirty"] == "false"
    assert client.get_registered_model("seqpipe-text_file").aliases["champion"] in (1, 2)


def test_edited_conf_is_never_silently_ignored(reproduced, tmp_path):
    repo = clone(reproduced[0], tmp_path / "repo")
    trained = {p: p.read_bytes() for p in (repo / "models").rglob("*") if p.is_file()}
    time.sleep(1.1)  # a visibly later modification time
    conf = repo / "conf" / "config.yaml"
    conf.write_text(conf.read_text().replace("weight_decay: 0.0", "weight_decay: 0.01"))
    stale = sh("dvc", "repro", cwd=repo, check=False)
    assert stale.returncode != 0
    assert "params.yaml is stale" in stale.stderr + stale.stdout and "seqpipe compose" in stale.stderr + stale.stdout
    assert {p: p.read_bytes() for p in (repo / "models").rglob("*") if p.is_file()} == trained  # nothing trained
    sh("seqpipe", "compose", cwd=repo)
    assert ran(sh("dvc", "repro", "train", cwd=repo)) == ["config", "train"]  # the data stages stand


def test_a_tracking_server_that_is_down_stops_train_within_seconds_and_loses_nothing(reproduced, tmp_path):
    repo = clone(reproduced[0], tmp_path / "repo")
    kept = ["reports/train.json", "reports/history.csv", "reports/metrics.json", "reports/registry.json",
            *[str(p.relative_to(repo)) for p in (repo / "models").rglob("*") if p.is_file()]]
    before = {name: (repo / name).read_bytes() for name in kept}
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    out = sh("dvc", "repro", "-f", "train", cwd=repo, check=False, env={"MLFLOW_TRACKING_URI": dead})
    elapsed = time.monotonic() - start
    text = out.stdout + out.stderr
    print(f"dvc repro -f train against {dead}: exit {out.returncode} after {elapsed:.1f} s")
    assert out.returncode != 0 and f"the MLflow tracking server {dead} does not answer (connection refused" in text
    assert elapsed < 30, elapsed  # dvc's own start and the config stage included; the store check is ~2 s
    assert {name: (repo / name).read_bytes() for name in kept} == before  # every earlier output intact


def test_a_refused_dvc_exp_run_names_the_fix_and_the_next_repro_does_too(repo):
    """`dvc exp run -S model.cell=transformer` composes params.yaml itself and leaves it when a stage refuses it:
    the refusal, and every `dvc repro` after it, says where params.yaml differs from conf/ and how to rewrite it."""
    fix = "params.yaml differs from conf/ at model.cell: written by `dvc exp run -S` or by hand; `seqpipe compose`"
    refused = sh("dvc", "exp", "run", "-S", "model.cell=transformer", cwd=repo, check=False)
    assert refused.returncode != 0 and "model.cell='transformer' is not allowed" in refused.stderr + refused.stdout
    assert fix in refused.stderr + refused.stdout
    again = sh("dvc", "repro", cwd=repo, check=False)
    assert again.returncode != 0 and fix in again.stderr + again.stdout
    sh("seqpipe", "compose", cwd=repo)
    assert OmegaConf.load(repo / "params.yaml").model.cell == "lstm"
