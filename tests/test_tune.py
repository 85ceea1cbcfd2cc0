"""seqpipe tune: real Ray Tune sweeps of train.run on tiny data, tracked in a real SQLite MLflow store."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import CONF, tiny_overrides, write_corpus

from seqpipe import fetch, prepare
from seqpipe.config import compose
from seqpipe.errors import SeqpipeError
from seqpipe.experiments.tune import check_space, space_items, trial_rows

SEQPIPE = str(Path(sys.executable).parent / "seqpipe")
RAY = str(Path(sys.executable).parent / "ray")
BUDGET = ["trainer.max_epochs=3", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
          "tune.scheduler.grace_period=1", "tune.scheduler.reduction_factor=2"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with tiny prepared data, its own conf/ (seqpipe tune writes conf/experiment/) and HOME."""
    root = tmp_path_factory.mktemp("tune")
    write_corpus(root / "corpus")
    cfg = compose(tiny_overrides(root), config_dir=CONF)
    fetch.run(cfg)
    prepare.run(cfg)
    shutil.copytree(CONF, root / "conf")
    (root / "home").mkdir()
    return root


def tune_cli(root: Path, *overrides: str, wait: bool = True, name: str = "s"):  # noqa: ANN201

    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "HOME": str(root / "home"),
           "SEQPIPE_CONF_DIR": str(root / "conf")}
    argv = [SEQPIPE, "tune", *tiny_overrides(root), *BUDGET, f"tune.storage={root / 'sweeps'}", f"tune.name={name}",
            *overrides]
    if not wait:
        return subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def sweep_runs(root: Path, name: str) -> tuple[mlflow.entities.Run, list[mlflow.entities.Run]]:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seqpipe-text_file")
    runs = client.search_runs([exp.experiment_id], f"tags.sweep = '{name}'", max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    assert len(parents) == 1
    return parents[0], [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]


def test_space_is_read_from_the_nested_yaml():
    cfg = compose([], config_dir=CONF)
    assert [(k, kind) for k, kind, _ in space_items(cfg.tune.space)] == [
        ("model.num_layers", "choice"), ("model.hidden_size", "lograndint"), ("model.cell", "choice"),
        ("optim.lr", "loguniform")]
    assert check_space(cfg)[0] == ("model.num_layers", "choice", [1, 2, 3])


@pytest.mark.parametrize("space", sorted(p.stem for p in (CONF / "tune").glob("*.yaml")))
def test_every_shipped_space_is_accepted(space):
    """conf/tune/*.yaml (depth_hidden, and the sweeps behind recipe defaults, e.g. chorales) pass the checks a sweep
    makes before Ray starts: every key exists and every value it can draw is one `seqpipe train` takes."""
    assert check_space(compose([f"tune={space}"], config_dir=CONF))


def test_a_sweep_reads_only_its_own_trials_when_an_earlier_one_had_its_name(tmp_path):
    """A sweep folder removed and a new sweep started under the same tune.name: the earlier sweep's trial runs carry
    the same `sweep` tag in MLflow, but another parent. The new sweep's results (and so its best trial, written to
    conf/experiment/) come from its own trials only; the earlier one's better figure is not taken for its own."""
    cfg = compose(["mlflow.experiment=sweeps"], config_dir=CONF)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("sweeps", artifact_location=(tmp_path / "artifacts").as_uri())
    parents = {}
    for sweep, losses in (("old", [1.0, 0.5]), ("new", [2.0, 1.5, 1.2])):
        parents[sweep] = client.create_run(experiment, tags={"sweep": "same-name", "sweep.role": "parent"}).info.run_id
        for i, loss in enumerate(losses):
            run = client.create_run(experiment, tags={"mlflow.parentRunId": parents[sweep], "sweep": "same-name",
                                                      "trial": f"{sweep}_{i}", "space.model.hidden_size": "32"})
            client.log_metric(run.info.run_id, cfg.monitor, loss, step=0)
            client.set_terminated(run.info.run_id)
    rows = trial_rows(client, cfg, parents["new"])
    assert [r["trial"] for r in rows] == ["new_0", "new_1", "new_2"]
    assert min(r["best"] for r in rows) == 1.2  # not the old sweep's 0.5
    assert [r["trial"] for r in trial_rows(client, cfg, parents["old"])] == ["old_0", "old_1"]


@pytest.mark.parametrize("overrides,message", [
    (["+tune.space.model.hiden_size.choice=[1,2]"], "tune.space names 'model.hiden_size', which is not a key of the "
     "config; the keys under 'model' are: cell, nonlinearity"),
    (["tune.space.model.num_layers.choice=[]"], "tune.space.model.num_layers.choice is empty"),
    (["tune.space.optim.lr.loguniform=[0.1,0.01]"], "low must be below high"),
    (["tune.space.optim.lr.loguniform=[0,0.1]"], "includes values <= 0, which have no logarithm"),
    (["tune.space.model.cell.choice=[gru,transformer]"], "the value 'transformer' is refused: model.cell="),
    (["tune.space.model.num_layers.choice=[0,1]"], "model.num_layers=0 must be a positive integer"),
    (["+tune.space.paths.models.choice=[a]"], "tune.space cannot sample 'paths.models'"),
])
def test_bad_spaces_are_refused(overrides, message):
    with pytest.raises(SeqpipeError) as e:
        check_space(compose(overrides, config_dir=CONF))
    assert message in str(e.value)


@pytest.mark.slow
def test_sweep_tracks_every_trial_and_writes_the_best_as_an_experiment(project):
    """Six trials, two at a time; the ones drawing a 10^7-wide layer do not fit in memory and are recorded as failed
    while the sweep goes on; every trial is a nested MLflow run; the best becomes conf/experiment/best_text_file."""
    space = ["~tune.space.model.hidden_size", "+tune.space.model.hidden_size.choice=[16,10000000]",
             "model.embedding_dim=1", "tune.space.model.num_layers.choice=[1,2]", "tune.num_samples=6",
             "tune.cpus_per_trial=1", "tune.max_concurrent=2"]
    done = tune_cli(project, *space, name="main")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parent, children = sweep_runs(project, "main")
    assert len(children) == 6
    failed = [r for r in children if r.info.status == "FAILED"]
    assert failed and all(r.data.tags["space.model.hidden_size"] == "10000000" for r in failed)
    # refused before any memory is allocated (train.check_memory), so the trial fails at once and says why
    assert all("lower model.hidden_size" in r.data.tags["error"] for r in failed)
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == 6 - len(failed) and finished
    for r in finished:
        assert r.data.tags["trial"] and r.data.params["model.hidden_size"] == "16"
        assert r.data.tags["stopped"] in ("asha", "no") and "val/loss" in r.data.metrics
        assert "tune.num_samples" not in r.data.params  # the sweep's settings are the parent's
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/trials"] == 6 and parent.data.metrics["sweep/failed"] == len(failed)
    artifacts = {a.path for a in mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").list_artifacts(
        parent.info.run_id)}
    assert {"results.csv", "sweep.png", "summary.json"} <= artifacts
    rows = list(csv.DictReader(open(project / "sweeps" / "main" / "results.csv")))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"FINISHED", "FAILED"}
    best = min((r for r in rows if r["status"] == "FINISHED"), key=lambda r: float(r["best"]))
    assert float(best["best"]) == pytest.approx(min(r.data.metrics["val/loss"] for r in finished), abs=1.0)
    experiment = project / "conf" / "experiment" / "best_text_file.yaml"
    body = yaml.safe_load(experiment.read_text())
    assert body["model"]["num_layers"] == int(best["model.num_layers"]) and body["model"]["hidden_size"] == 16
    assert "seqpipe compose experiment=best_text_file && dvc repro" in experiment.read_text()
    cfg = compose(["experiment=best_text_file"], config_dir=project / "conf")  # the pipeline trains exactly it
    assert cfg.recipe.name == "text_file" and cfg.model.cell == best["model.cell"]
    assert cfg.optim.lr == pytest.approx(float(best["optim.lr"]))
    assert "tune: best trial" in done.stderr and "experiment=best_text_file" in done.stderr
    assert not (project / "home" / "ray_results").exists()  # Ray writes under tune.storage only


@pytest.mark.slow
def test_asha_stops_the_worse_trials_early(project):
    """One trial at a time (tune.max_concurrent=1 holds although the CPUs would take two), so the order is fixed by
    the seed: trials with a learning rate 1000x too small reach the first rung behind a good one and ASHA stops them
    there."""
    done = tune_cli(project, "~tune.space.optim.lr", "+tune.space.optim.lr.choice=[0.03,0.00003]", "tune.num_samples=5",
                    "tune.max_concurrent=1", "tune.cpus_per_trial=1", "tune.space.model.cell.choice=[gru]", name="asha")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, children = sweep_runs(project, "asha")
    stopped = [r for r in children if r.data.tags["stopped"] == "asha"]
    assert stopped and all(r.info.status == "FINISHED" for r in children)
    spans = sorted((r.info.start_time, r.info.end_time) for r in children)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans  # never two at once
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for r in children:
        epochs = len(client.get_metric_history(r.info.run_id, "val/loss"))
        assert epochs < 3 if r in stopped else epochs == 3


@pytest.mark.slow
def test_interrupted_sweep_resumes(project):
    """Ctrl-C stops the sweep (exit 130, it says how to go on); --resume runs the rest in the same parent run."""
    experiment = project / "conf" / "experiment" / "best_text_file.yaml"

    def best_file() -> str | None:
        return experiment.read_text() if experiment.is_file() else None

    best_before = best_file()
    proc = tune_cli(project, "tune.num_samples=3", "tune.max_concurrent=1", "tune.space.model.num_layers.choice=[2]",
                    "~tune.space.model.hidden_size", "+tune.space.model.hidden_size.choice=[64]",
                    "trainer.max_epochs=4", "tune.scheduler.grace_period=4", "trainer.limit_train_batches=8",
                    wait=False, name="resume")
    deadline = time.monotonic() + 240
    while not list((project / "sweeps" / "resume" / "trials").glob("*/models/checkpoints/last.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "timeout"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "seqpipe tune --resume tune.name=resume" in out
    assert best_file() == best_before  # an unfinished sweep writes no experiment file
    parent, children = sweep_runs(project, "resume")
    assert parent.info.status == "KILLED" and len(children) < 3
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "HOME": str(project / "home"),
           "SEQPIPE_CONF_DIR": str(project / "conf")}
    done = subprocess.run([SEQPIPE, "tune", "--resume", f"tune.storage={project / 'sweeps'}"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parent, children = sweep_runs(project, "resume")
    assert parent.info.status == "FINISHED" and len({r.data.tags["trial"] for r in children}) == 3
    assert all(r.info.status == "FINISHED" for r in children)
    assert len(children) == 3  # the interrupted trial went on from its last checkpoint, in its own MLflow run
    assert "sweep resume" in best_file()
