"""Team use against a real `mlflow server` (SQLite backend, 127.0.0.1, a free port): runs land on the server named
for what ran, with tags and one flat set of params; a version carries a description and is added once per training
run; concurrent registrations leave the best version champion; a served model says which version answers; a model
trained on other data never takes the champion silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import CONF, FEW_BATCHES, mlflow_server, tiny_overrides, working_dir, write_corpus
from omegaconf import OmegaConf

from seqpipe import cli, evaluate, fetch, prepare, register, train
from seqpipe.config import compose
from seqpipe.tracking.runs import flatten
from seqpipe.tracking.store import use_tracking_uri

pytestmark = pytest.mark.slow
NAME = "seqpipe-text_file"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("server")) as url:
        yield url


def _set_loss(cfg, loss: float) -> None:
    """Give a trained model's metrics.json another test loss (to decide which of several models is best)."""
    path = Path(cfg.paths.reports) / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "test/loss": loss}))


@pytest.fixture(scope="module")
def team(server, tmp_path_factory):
    """One corpus prepared once; three tiny models trained on it (seeds 1-3), each with its own models/ and reports/,
    tracked on the server; a fourth trained on another corpus (other data)."""
    root = tmp_path_factory.mktemp("team")
    write_corpus(root / "corpus")
    write_corpus(root / "other" / "corpus", n_docs=4, seed=7)
    base = [*tiny_overrides(root), *FEW_BATCHES, f"mlflow.tracking_uri={server}"]
    with working_dir(root):
        cfg = compose(base, config_dir=CONF)
        fetch.run(cfg)
        prepare.run(cfg)
        cfgs = []
        for seed in (1, 2, 3):
            c = compose([*base, f"seed={seed}", f"paths.models={root}/m{seed}", f"paths.reports={root}/r{seed}"],
                        config_dir=CONF)
            train.run(c)
            evaluate.run(c)
            cfgs.append(c)
        other = compose([*tiny_overrides(root / "other"), *FEW_BATCHES, f"mlflow.tracking_uri={server}",
                         f"paths.downloads={root}/downloads"], config_dir=CONF)
        fetch.run(other)
        prepare.run(other)
        train.run(other)
        evaluate.run(other)
    yield root, cfgs, other


def _run_id(cfg) -> str:
    return json.loads((Path(cfg.paths.reports) / "train.json").read_text())["run_id"]


def test_runs_on_the_server_say_what_ran(team, server):
    _, cfgs, _ = team
    client = mlflow.MlflowClient(server)
    run_id = _run_id(cfgs[0])
    run = client.get_run(run_id)
    assert run.info.run_name == f"text_file-lstm-1x32-{run_id[:6]}"
    assert {"recipe": "text_file", "task": "lm", "cell": "lstm"}.items() <= run.data.tags.items()
    assert len(run.data.tags["data.digest"]) == 64
    # one flat, dotted set of params: the composed config (where it is tracked is not a param) and the data
    assert set(run.data.params) == set(flatten(cfgs[0])) | {"data.digest", "data.vocab_size"}
    assert "mlflow.tracking_uri" not in run.data.params and not any("/" in k for k in run.data.params)
    # one name per metric: every key of metrics.json is an MLflow metric of the same name and value
    metrics = json.loads((Path(cfgs[0].paths.reports) / "metrics.json").read_text())
    assert {k: run.data.metrics[k] for k in metrics} == pytest.approx(metrics)


def test_a_version_is_described_and_added_once_per_training_run(team, server):
    _, cfgs, _ = team
    with working_dir(Path(cfgs[0].paths.reports).parent):
        first = register.run(cfgs[0])
        again = register.run(cfgs[0])
    assert first["new_version"] and not again["new_version"] and again["version"] == first["version"]
    client = mlflow.MlflowClient(server)
    assert [int(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == [first["version"]]
    mv = client.get_model_version(NAME, str(first["version"]))
    digest = client.get_run(_run_id(cfgs[0])).data.params["data.digest"]
    for text in ("text_file-lstm-1x32: recipe text_file, task lm", "lstm, 1 x 32 hidden", "test: ",
                 f"test/loss {first['test/loss']:.4g}", f"data: sha256 {digest}", f"run: {_run_id(cfgs[0])}"):
        assert text in mv.description, (text, mv.description)
    assert mv.tags["test/loss"] == str(first["test/loss"]) and mv.tags["data.digest"] == digest


def test_concurrent_registrations_leave_the_best_version_champion(team, server, tmp_path):
    root, cfgs, _ = team
    client = mlflow.MlflowClient(server)
    champion = int(client.get_model_version_by_alias(NAME, "champion").version)
    loss = float(client.get_model_version(NAME, str(champion)).tags["test/loss"])
    _set_loss(cfgs[1], loss - 0.2)  # the best
    _set_loss(cfgs[2], loss - 0.1)  # better than the champion, worse than cfgs[1]
    procs = []
    for i, cfg in enumerate(cfgs[1:]):
        OmegaConf.save(cfg, tmp_path / f"cfg{i}.yaml")
        code = ("from omegaconf import OmegaConf; from seqpipe import register; "
                f"register.run(OmegaConf.load({str(tmp_path / f'cfg{i}.yaml')!r}))")
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    best = next(v for v in client.search_model_versions(f"name='{NAME}'") if v.run_id == _run_id(cfgs[1]))
    assert client.get_model_version_by_alias(NAME, "champion").version == best.version, errors


def test_a_stale_champion_write_is_put_right(team, server):
    """What a registration that decided on old information does: it moved the alias to a worse version after the
    best one was champion. Its own re-read finds the better version (registered within the window) and puts it back."""
    _, cfgs, _ = team
    client = mlflow.MlflowClient(server)
    versions = {v.run_id: v for v in client.search_model_versions(f"name='{NAME}'")}
    best, worse = versions[_run_id(cfgs[1])], versions[_run_id(cfgs[2])]
    use_tracking_uri(server)
    client.set_registered_model_alias(NAME, "champion", worse.version)  # the stale write
    result = register.settle_champion(client, NAME, worse, force=False)
    assert not result["promoted"] and f"champion v{best.version}" in result["verdict"]
    assert client.get_model_version_by_alias(NAME, "champion").version == best.version


def test_a_served_model_names_its_version_after_the_alias_moves(team, server, capsys):
    _, cfgs, _ = team
    client = mlflow.MlflowClient(server)
    use_tracking_uri(server)
    champion = client.get_model_version_by_alias(NAME, "champion")
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")  # as `mlflow models serve` loads it
    ask = pd.DataFrame({"prompt": ["KING:"]})
    assert loaded.predict(ask, params={"max_new_tokens": 5})["model"][0] == f"{NAME}/{champion.version}"
    client.set_registered_model_alias(NAME, "champion", "1")  # a roll-back: the alias moves
    try:
        assert loaded.predict(ask, params={"max_new_tokens": 5})["model"][0] == f"{NAME}/{champion.version}"
        reloaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")  # what restarting the server does
        assert reloaded.predict(ask, params={"max_new_tokens": 5})["model"][0] == f"{NAME}/1"
    finally:
        client.set_registered_model_alias(NAME, "champion", champion.version)
    # and the command line reads the same server
    assert cli.main(["generate", "--model", f"models:/{NAME}@champion", "--prompt", "KING:", "--max-new-tokens",
                     "10", "--seed", "1", "--tracking-uri", server]) == 0
    assert capsys.readouterr().out.startswith("KING:")


def test_a_model_trained_on_other_data_does_not_take_the_champion(team, server):
    root, _, other = team
    client = mlflow.MlflowClient(server)
    before = client.get_model_version_by_alias(NAME, "champion").version
    _set_loss(other, 0.01)  # far better, on other data: not comparable
    with working_dir(root):
        result = register.run(other)
    assert not result["promoted"] and "not comparable" in result["verdict"] and "other data" in result["verdict"]
    assert "register.force_champion=true" in result["verdict"]
    assert client.get_model_version_by_alias(NAME, "champion").version == before
    assert json.loads((Path(other.paths.reports) / "registry.json").read_text())["champion_version"] == int(before)
    other.register.force_champion = True
    with working_dir(root):
        forced = register.run(other)  # the same training run: no new version, the alias moves on request
    assert not forced["new_version"] and forced["promoted"]
    assert client.get_model_version_by_alias(NAME, "champion").version == str(result["version"])

