"""`dvc repro` in a real DVC repo in tmp_path: the stages run, a rerun is a no-op, params are tracked by key."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, write_corpus
from omegaconf import OmegaConf

from seqpipe.config import compose

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def sh(*cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the project whose conf/ is the tiny setup, as a git + DVC repo."""
    for name in ("src", "dvc.yaml", ".dvcignore", "pyproject.toml"):
        src = ROOT / name
        (shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
         if src.is_dir() else shutil.copy(src, tmp_path / name))
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    tiny = compose([*TINY, "recipe.fetch.paths=[corpus]"], config_dir=ROOT / "conf")
    (tmp_path / "conf" / "config.yaml").write_text(OmegaConf.to_yaml(tiny))  # flat: no defaults list
    write_corpus(tmp_path / "corpus")
    (tmp_path / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    sh("git", "init", "-q", cwd=tmp_path)
    sh("dvc", "init", "-q", cwd=tmp_path)
    sh("dvc", "config", "hydra.enabled", "true", cwd=tmp_path)
    sh("seqpipe", "compose", cwd=tmp_path)
    sh("git", "add", "-A", cwd=tmp_path)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=tmp_path)
    return tmp_path


def ran(out: subprocess.CompletedProcess) -> list[str]:
    return [line.split("'")[1] for line in (out.stdout + out.stderr).splitlines()
            if line.startswith("Running stage '")]


def test_repro_runs_then_is_a_noop_and_params_rerun_only_what_they_touch(repo):
    first = sh("dvc", "repro", cwd=repo)
    assert sorted(ran(first)) == ["config", "evaluate", "fetch", "prepare", "register", "train"]
    assert (repo / "reports" / "metrics.json").is_file() and (repo / "reports" / "registry.json").is_file()
    assert ran(sh("dvc", "repro", cwd=repo)) == []

    # A model parameter, as a DVC experiment (Hydra composes params.yaml): data stages are not rerun.
    exp = sh("dvc", "exp", "run", "-S", "model.hidden_size=24", cwd=repo)
    assert ran(exp) == ["train", "evaluate", "register"]  # not config, fetch or prepare
    assert OmegaConf.load(repo / "params.yaml").model.hidden_size == 24
    assert "24" in sh("dvc", "exp", "show", "--no-pager", "--csv", cwd=repo).stdout


def test_edited_conf_is_never_silently_ignored(repo):
    time.sleep(1.1)  # a visibly later modification time
    conf = repo / "conf" / "config.yaml"
    conf.write_text(conf.read_text().replace("hidden_size: 32", "hidden_size: 40"))
    stale = sh("dvc", "repro", cwd=repo, check=False)
    assert stale.returncode != 0
    assert "params.yaml is stale" in stale.stderr + stale.stdout and "seqpipe compose" in stale.stderr + stale.stdout
    assert not (repo / "models").exists()  # nothing trained on stale params
    sh("seqpipe", "compose", cwd=repo)
    assert ran(sh("dvc", "repro", "train", cwd=repo))[-1] == "train"
