"""The `seqpipe` command itself: fast help without heavy imports, Hydra's command line for train."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import FEW_BATCHES, tiny_overrides

from seqpipe import fetch, prepare

SEQPIPE = str(Path(sys.executable).with_name("seqpipe"))


def test_help_imports_nothing_heavy():
    code = "import sys; from seqpipe import cli; cli.parser(); print(sorted(m for m in ('torch', 'lightning', " \
           "'mlflow', 'hydra') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "generate" in subprocess.run([SEQPIPE, "--help"], capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_train_multirun_runs_each_point_of_the_grid_once_in_its_own_folder(tiny_cfg, tmp_path):
    """A 2 x 2 grid: four jobs, four folders with their own checkpoints, four MLflow runs, one per point."""
    fetch.run(tiny_cfg)
    prepare.run(tiny_cfg)
    keep = [o for o in tiny_overrides(tmp_path) if not o.startswith(("paths.models", "paths.reports"))]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([SEQPIPE, "train", "--multirun", "model.cell=rnn,gru", "model.num_layers=1,2",
                           *keep, *FEW_BATCHES, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("train: best val/loss") == 4
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    for job in ("0", "1", "2", "3"):
        assert (tmp_path / "sweep" / job / "models" / "checkpoints" / "best.ckpt").is_file()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("seqpipe-text_file").experiment_id])
    points = sorted((r.data.params["model.cell"], r.data.params["model.num_layers"]) for r in runs)
    assert points == [("gru", "1"), ("gru", "2"), ("rnn", "1"), ("rnn", "2")]  # each point once, none duplicated
    assert all(r.info.status == "FINISHED" for r in runs)
