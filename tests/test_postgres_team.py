"""The team set-up on real processes: PostgreSQL and `mlflow server` on it (proxied artifacts), started on 127.0.0.1
by `seqpipe team-server`'s own code. The pipeline trains, evaluates, registers and crowns against it; two trainings
from two folders at once both land; `seqpipe generate` and `mlflow models serve` load the champion; a sweep logs its
trials; PostgreSQL restarted during training loses nothing, a store that is gone stops with one line, a server down
at register time fails in seconds and the rerun registers once; an SQLite store migrates with its ids."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning.pytorch as L
import mlflow
import pandas as pd
import postgres
import pytest
from conftest import (
    CONF,
    FEW_BATCHES,
    clone,
    here_overrides,
    models_serve,
    post_json,
    run_stages,
    working_dir,
    write_corpus,
)
from omegaconf import OmegaConf

from seqpipe import cli, evaluate, register, train
from seqpipe.config import compose
from seqpipe.errors import SeqpipeError
from seqpipe.tracking import team_server
from seqpipe.tracking.migrate import migrate
from seqpipe.tracking.store import use_tracking_uri

psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed: pip install -e '.[dev]'")
pytestmark = pytest.mark.slow
NAME = "seqpipe-text_file"
SEQPIPE = str(Path(sys.executable).parent / "seqpipe")


@pytest.fixture(scope="module")
def team():
    with postgres.team() as started:
        yield started


def overrides(root: Path, url: str, *extra: str) -> list[str]:
    """conftest's tiny run inside `root` (the corpus named relative to it), a few batches, tracked on `url`."""
    return [*[o for o in here_overrides(root) if not o.startswith("mlflow.tracking_uri=")], *FEW_BATCHES,
            f"mlflow.tracking_uri={url}", *extra]


@pytest.fixture(scope="module")
def project(team, tmp_path_factory):
    """fetch -> prepare -> train -> evaluate -> register of the tiny model, every run and version on the team server."""
    root = tmp_path_factory.mktemp("pg-project")
    write_corpus(root / "corpus")
    cfg = compose(overrides(root, team.url), config_dir=CONF)
    start = time.monotonic()
    with working_dir(root):
        done = run_stages(cfg)
    print(f"pipeline against PostgreSQL: {time.monotonic() - start:.1f} s")
    return {"root": root, "seconds": time.monotonic() - start, **done}


def copy_project(project: dict, dst: Path) -> Path:
    """The project's data in another folder (another teammate's checkout), without its models and reports."""
    shutil.copytree(project["root"], dst, ignore=shutil.ignore_patterns("models", "reports", "mlruns"))
    return dst


def psql(team, query: str) -> list[tuple]:
    with psycopg.connect(host="127.0.0.1", port=team.pg_port, user="mlflow", password=team.password,
                         dbname=team.db) as con:
        return con.execute(query).fetchall()


def test_the_pipeline_runs_registers_and_crowns_on_postgres(project, team):
    run_id = project["train"]["run_id"]
    client = mlflow.MlflowClient(team.url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test/loss"] == pytest.approx(
        project["metrics"]["test/loss"])
    assert project["registered"]["new_version"] and project["registered"]["promoted"]
    assert client.get_model_version_by_alias(NAME, "champion").run_id == run_id
    # the rows are in PostgreSQL, the model's files behind the server (proxied: no client path in the store)
    assert psql(team, f"SELECT status FROM runs WHERE run_uuid = '{run_id}'") == [("FINISHED",)]
    assert client.get_model_version_download_uri(NAME, "1").startswith("mlflow-artifacts:/")
    assert any((Path(team.folder) / "artifacts").rglob("MLmodel"))


def test_two_trainings_at_once_from_two_folders_both_land(project, team, tmp_path):
    procs, cfgs = [], []
    for i in (1, 2):
        root = copy_project(project, tmp_path / f"teammate{i}")
        cfg = compose(overrides(root, team.url, f"seed={i}"), config_dir=CONF)
        OmegaConf.save(cfg, root / "cfg.yaml")
        code = ("from omegaconf import OmegaConf; from seqpipe import train, evaluate, register; "
                "c = OmegaConf.load('cfg.yaml'); train.run(c); evaluate.run(c); register.run(c)")
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
        cfgs.append(cfg)
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    client = mlflow.MlflowClient(team.url)
    run_ids = [json.loads((Path(c.paths.reports) / "train.json").read_text())["run_id"] for c in cfgs]
    assert [client.get_run(r).info.status for r in run_ids] == ["FINISHED", "FINISHED"]
    versions = {v.run_id: v for v in client.search_model_versions(f"name='{NAME}'")}
    assert set(run_ids) <= set(versions) and len({versions[r].version for r in run_ids}) == 2


def test_generate_and_models_serve_load_the_champion(project, team, capsys):
    champion = mlflow.MlflowClient(team.url).get_model_version_by_alias(NAME, "champion").version
    assert cli.main(["generate", "--model", f"models:/{NAME}@champion", "--prompt", "KING:", "--max-new-tokens", "10",
                     "--seed", "1", "--tracking-uri", team.url]) == 0
    assert capsys.readouterr().out.startswith("KING:")
    with models_serve(f"models:/{NAME}@champion", team.url, project["root"]) as url:
        status, answer = post_json(f"{url}/invocations", json.dumps(
            {"dataframe_records": [{"prompt": "KING:"}], "params": {"max_new_tokens": 5}}).encode())
    assert status == 200, answer
    assert answer["predictions"][0]["model"] == f"{NAME}/{champion}"


def test_a_sweep_logs_its_trials_on_the_server(project, team, tmp_path):
    root = copy_project(project, tmp_path / "sweep")
    shutil.copytree(CONF, root / "conf")  # seqpipe tune writes conf/experiment/
    (root / "home").mkdir()
    # RAY_ADDRESS=local: a Ray of its own, even where a `ray start` cluster runs on the machine (another test's)
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "HOME": str(root / "home"),
           "SEQPIPE_CONF_DIR": str(root / "conf"), "RAY_ADDRESS": "local"}
    out = subprocess.run([SEQPIPE, "tune", *overrides(root, team.url), "tune.num_samples=2", "tune.cpus_per_trial=1",
                          "tune.scheduler.grace_period=1", f"tune.storage={root / 'sweeps'}", "tune.name=pg"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = mlflow.MlflowClient(team.url)
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id], "tags.sweep = 'pg'")
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    assert len(parents) == 1
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" and "val/loss" in r.data.metrics for r in trials)


class AtBatch(L.Callback):
    """Run `act` once, after training batch `n` (while the run is logging)."""

    def __init__(self, n: int, act):  # noqa: ANN001
        self.n, self.act, self.done = n, act, False

    def on_train_batch_end(self, trainer, *_):  # noqa: ANN001, ANN002
        if trainer.global_step >= self.n and not self.done:
            self.done = True
            self.act()


def test_postgres_restarted_during_training_loses_nothing(project, team, tmp_path):
    """PostgreSQL goes away for 2 s while the run logs every step; MLflow's client retries (HTTP 500 from the
    server while its database is away) carry the run through: it finishes with every value, as Lightning logged it."""
    root = copy_project(project, tmp_path / "restart")
    cfg = compose(overrides(root, team.url, "trainer.limit_train_batches=6", "trainer.max_epochs=2",
                            "train.log_every_n_steps=1"), config_dir=CONF)
    log = Path(team.folder) / "mlflow.log"
    before = log.stat().st_size
    restarter = threading.Thread(target=lambda: (time.sleep(2), team_server.pg_ctl(team, "start")))

    def restart() -> None:
        team_server.pg_ctl(team, "stop")  # -m fast: every open session is closed, as a restart does
        restarter.start()

    start = time.monotonic()
    try:
        with working_dir(root):
            result = train.run(cfg, callbacks=[AtBatch(2, restart)])
    finally:
        restarter.join()
    print(f"training across a PostgreSQL restart: {time.monotonic() - start:.1f} s")
    assert "OperationalError" in log.read_text()[before:]  # the server did lose its database meanwhile
    run = mlflow.MlflowClient(team.url).get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    history = mlflow.MlflowClient(team.url).get_metric_history(result["run_id"], "train/loss_step")
    assert sorted(m.step for m in history) == list(range(12))  # every step's value, none lost, none twice
    assert len(mlflow.MlflowClient(team.url).get_metric_history(result["run_id"], "val/loss")) == 2


def test_a_store_that_is_gone_stops_training_with_one_line_and_the_rerun_resumes(project, team, tmp_path,
                                                                                 monkeypatch):
    root = copy_project(project, tmp_path / "gone")
    cfg = compose(overrides(root, team.url, "trainer.max_epochs=2"), config_dir=CONF)
    team_server.pg_ctl(team, "stop")
    try:
        start = time.monotonic()
        with working_dir(root), pytest.raises(SeqpipeError) as refused:
            train.run(cfg)
        before = time.monotonic() - start
        assert f"the MLflow tracking server {team.url} answers but its store does not" in str(refused.value)
        assert "\n" not in str(refused.value) and not (root / "models").exists()
        # gone in the second epoch, for longer than the client retries (7 by default, about 4 minutes; none here)
        team_server.pg_ctl(team, "start")
        with monkeypatch.context() as env:
            env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            start = time.monotonic()
            with working_dir(root), pytest.raises(SeqpipeError) as lost:
                train.run(cfg, callbacks=[AtBatch(3, lambda: team_server.pg_ctl(team, "stop"))])
            during = time.monotonic() - start
    finally:
        if not team_server.postgres_running(team):
            team_server.pg_ctl(team, "start")
    print(f"store gone: refused in {before:.1f} s before training, {during:.1f} s into one: {lost.value}")
    assert f"the MLflow store {team.url} stopped answering during training (the server answers HTTP 5" in \
        str(lost.value) and "\n" not in str(lost.value)
    run_id = json.loads((root / "models" / "run.json").read_text())["run_id"]
    assert (root / "models" / "checkpoints" / "last.ckpt").is_file()  # the first epoch's
    with working_dir(root):  # the store is back: the same run goes on from the first epoch's checkpoint
        resumed = train.run(cfg)
    assert resumed["run_id"] == run_id and resumed["epochs"] == 2
    client = mlflow.MlflowClient(team.url)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len({m.step for m in client.get_metric_history(run_id, "val/loss")}) == 2  # one value an epoch


def test_a_server_down_at_register_time_fails_fast_and_the_rerun_registers_once(project, team, tmp_path):
    root = copy_project(project, tmp_path / "register")
    cfg = compose(overrides(root, team.url, "seed=7"), config_dir=CONF)
    with working_dir(root):
        train.run(cfg)
        evaluate.run(cfg)
    kept = {p: p.read_bytes() for p in (root / "models").rglob("*") if p.is_file()}
    client = mlflow.MlflowClient(team.url)
    versions = len(client.search_model_versions(f"name='{NAME}'"))
    team_server.stop_mlflow(team)
    try:
        start = time.monotonic()
        with working_dir(root), pytest.raises(SeqpipeError, match=f"the MLflow tracking server {team.url} does not "
                                               "answer"):
            register.run(cfg)
        elapsed = time.monotonic() - start
    finally:
        team_server.start_mlflow(team)
    print(f"register with the server down: refused in {elapsed:.1f} s")
    assert elapsed < 10 and {p: p.read_bytes() for p in kept} == kept
    with working_dir(root):
        first, again = register.run(cfg), register.run(cfg)
    assert first["new_version"] and not again["new_version"] and again["version"] == first["version"]
    assert len(client.search_model_versions(f"name='{NAME}'")) == versions + 1


def test_an_sqlite_store_migrates_to_the_server_with_its_ids(tiny_lm, team, tmp_path, capsys):
    lm = clone(tiny_lm["root"], tmp_path / "lm")
    source = f"sqlite:///{lm / 'mlflow.db'}"
    local = mlflow.MlflowClient(source)
    run_id = tiny_lm["train"]["run_id"]
    with postgres.second_server(team, "migrated") as target:
        start = time.monotonic()
        assert cli.main(["migrate-store", "--from", source, "--to", target.folder]) == 0  # the team-server folder
        moved = capsys.readouterr().err
        print(f"{moved.strip()} ({time.monotonic() - start:.1f} s with the command's start)")
        assert "1 registered models (1 versions)" in moved and "version numbers and aliases are unchanged" in moved
        assert target.password not in moved and "mlflow:***@127.0.0.1" in moved
        server = mlflow.MlflowClient(target.url)
        assert server.get_run(run_id).data.metrics == local.get_run(run_id).data.metrics
        assert [(m.step, m.value) for m in server.get_metric_history(run_id, "train/loss_step")] == \
               [(m.step, m.value) for m in local.get_metric_history(run_id, "train/loss_step")]
        assert server.get_model_version_by_alias(NAME, "champion").version == "1"
        ask = pd.DataFrame({"prompt": ["KING:"]})
        params = {"max_new_tokens": 20, "seed": 3}
        use_tracking_uri(source)
        expected = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(ask, params=params)
        (lm / "mlruns").rename(lm / "mlruns.moved")  # the server's copy, not the local files, must answer now
        use_tracking_uri(target.url)
        answer = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(ask, params=params)
        assert answer["text"][0] == expected["text"][0] and answer["model"][0] == f"{NAME}/1"
        with pytest.raises(SeqpipeError, match=r"is in use \(1 runs, 1 registered_models.*: migrate into an empty"):
            migrate(source, target.db_uri, target.url)
        # the same ids: this checkout's reports still name its run, and registering it again adds nothing
        cfg = compose([*here_overrides(lm), f"mlflow.tracking_uri={target.url}"], config_dir=CONF)
        with working_dir(lm):
            again = register.run(cfg)
        assert not again["new_version"] and again["version"] == 1



def test_the_team_server_commands_refuse_what_they_cannot_do(team, tmp_path, capsys):
    def refused(*argv: str) -> str:
        assert cli.main(list(argv)) == 2
        return capsys.readouterr().err

    assert f"the team server in {team.folder} is running already (mlflow server pid {team.pid}" in \
        refused("team-server", "start", "--dir", team.folder, "--port", str(team.port))
    assert "no team server in" in refused("team-server", "stop", "--dir", str(tmp_path / "none"))
    (tmp_path / "empty.db").touch()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert "--from takes an SQLite store that exists" in refused(
        "migrate-store", "--from", f"sqlite:///{tmp_path / 'none.db'}", "--to", team.folder)
    assert "--to takes the team server's database" in refused("migrate-store", "--from", empty, "--to", team.url,
                                                              "--server", team.url)
    assert f"the source {empty} holds no MLflow tables" in refused("migrate-store", "--from", empty, "--to",
                                                                  team.folder)
