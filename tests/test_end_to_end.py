"""prepare -> train -> evaluate -> register on a tiny corpus, then load, generate, serve; all real, in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import CONF, FEW_BATCHES, clone, here_overrides, models_serve, post_json, working_dir

from seqpipe import cli, evaluate, register, train
from seqpipe.cli.predict import generate
from seqpipe.config import compose
from seqpipe.errors import SeqpipeError
from seqpipe.tracking.store import use_tracking_uri

pytestmark = pytest.mark.slow
NAME = "seqpipe-text_file"


@pytest.fixture(scope="module")
def pipeline(tiny_lm, tmp_path_factory):
    """The session's tiny language model (conftest.tiny_lm), in a copy of its own: the tests below register more
    versions of it, in this order."""
    root = clone(tiny_lm["root"], tmp_path_factory.mktemp("e2e") / "project")
    with working_dir(root):
        yield {**tiny_lm, "root": root, "cfg": compose(here_overrides(root), config_dir=CONF)}


def test_training_learns_and_is_tracked(pipeline):
    cfg, trained, metrics = pipeline["cfg"], pipeline["train"], pipeline["metrics"]
    history = (Path(cfg.paths.reports) / "history.csv").read_text().splitlines()
    first, last = (float(r.split(",")[3]) for r in (history[1], history[-1]))  # val/loss per epoch
    assert last < first < 3.3  # falls, and below a uniform guess over the ~40-symbol vocabulary
    assert metrics["test/loss"] < 3.0 and metrics["test/bpc"] == pytest.approx(metrics["test/loss"] / 0.693147, 1e-4)
    run = mlflow.MlflowClient(cfg.mlflow.tracking_uri).get_run(trained["run_id"])
    assert run.data.params["model.cell"] == "lstm" and len(run.data.params["data.digest"]) == 64
    assert run.info.run_name.startswith("text_file-lstm-1x32-") and run.data.tags["recipe"] == "text_file"
    for key in ("train/loss", "val/loss", "val/bpc", "val/ppl", "train/tokens_per_sec", "test/loss", "train/lr"):
        assert key in run.data.metrics, key
    # per-step values at every train.log_every_n_steps (5) steps, none missing (they are logged only on those steps)
    steps = [m.step for m in mlflow.MlflowClient(cfg.mlflow.tracking_uri).get_metric_history(run.info.run_id,
                                                                                              "train/loss_step")]
    assert steps == list(range(4, trained["steps"], 5)), steps
    assert (Path(cfg.paths.reports) / "evaluate" / "learning_curve.png").stat().st_size > 1000
    assert (Path(cfg.paths.reports) / "evaluate" / "sample.txt").read_text().startswith(cfg.evaluate.prompt)


def test_registered_champion_loads_and_generates(pipeline):
    use_tracking_uri(pipeline["cfg"].mlflow.tracking_uri)
    assert pipeline["registered"]["promoted"] and pipeline["registered"]["version"] == 1
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    answer = model.predict(pd.DataFrame({"prompt": ["ROMEO:", "JULIET:"]}),
                           params={"max_new_tokens": 30, "seed": 1, "temperature": 1.0})
    out = answer["text"].tolist()
    assert out[0].startswith("ROMEO:") and out[1].startswith("JULIET:")
    assert set(answer["model"]) == {f"{NAME}/1"} and set(answer["run_id"]) == {pipeline["train"]["run_id"]}
    assert all(len(o) - len(p) == 30 for o, p in zip(out, ["ROMEO:", "JULIET:"]))  # no <eos> in a tiny run
    again = model.predict(pd.DataFrame({"prompt": ["ROMEO:"]}), params={"max_new_tokens": 30, "seed": 1,
                                                                       "temperature": 1.0})
    assert again["text"][0] == out[0]  # a seed makes sampling repeatable


def test_unknown_prompt_characters_warn_not_crash(pipeline):
    use_tracking_uri(pipeline["cfg"].mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    with pytest.warns(UserWarning, match="not in the vocabulary"):
        out = model.predict(pd.DataFrame({"prompt": ["ROMEO: ☃"]}), params={"max_new_tokens": 5})
    assert out["text"][0].startswith("ROMEO: ☃")


def test_worse_model_never_takes_champion(pipeline):
    cfg = pipeline["cfg"]
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    v1 = client.get_model_version(NAME, "1")
    again = register.run(cfg)  # the same training run again: nothing new
    assert (again["version"], again["new_version"], again["promoted"]) == (1, False, True)
    root = pipeline["root"]
    worse = compose([*here_overrides(root), *FEW_BATCHES, "seed=2", f"paths.models={root}/worse/models",
                     f"paths.reports={root}/worse/reports"], config_dir=CONF)
    with working_dir(root):
        train.run(worse)
        metrics = evaluate.run(worse)
        metrics_file = Path(worse.paths.reports) / "metrics.json"
        metrics_file.write_text(json.dumps({**metrics, "test/loss": pipeline["metrics"]["test/loss"] + 1.0}))
        result = register.run(worse)
    assert result["version"] == 2 and result["new_version"] and not result["promoted"]
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1
    assert int(client.get_model_version_by_alias(NAME, "challenger").version) == 2
    after = client.get_model_version(NAME, "1")  # version 1 is untouched: a new version never replaces one
    assert (after.source, after.run_id, after.creation_timestamp) == (v1.source, v1.run_id, v1.creation_timestamp)
    assert client.get_model_version(NAME, "2").source != v1.source


def test_generate_command_and_missing_model_messages(pipeline, capsys):
    uri = pipeline["cfg"].mlflow.tracking_uri
    assert cli.main(["generate", "--model", f"models:/{NAME}@champion", "--prompt", "KING:",
                     "--max-new-tokens", "20", "--seed", "3", "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.startswith("KING:")
    assert cli.main(["generate", "--model", f"models:/{NAME}@gold", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "has no alias @gold" in err and "@champion -> v1" in err and "versions: 1" in err
    with pytest.raises(SeqpipeError, match=f"no registered model named 'nope'.*{NAME}"):
        generate("models:/nope@champion", ["x"], uri)


def test_mlflow_models_serve_answers_invocations(pipeline):
    with models_serve(f"models:/{NAME}@champion", pipeline["cfg"].mlflow.tracking_uri, pipeline["root"]) as url:
        body = {"dataframe_records": [{"prompt": "ROMEO:"}], "params": {"max_new_tokens": 25, "seed": 7}}
        status, answer = post_json(f"{url}/invocations", json.dumps(body).encode())
        assert status == 200, answer
        ((text, model, run_id),) = [(r["text"], r["model"], r["run_id"]) for r in answer["predictions"]]
        assert model == f"{NAME}/1" and run_id == pipeline["train"]["run_id"]  # which version answers
        assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 25
        status, answer = post_json(f"{url}/invocations", b"{not json")
        assert 400 <= status < 500
        status, answer = post_json(f"{url}/invocations", json.dumps({"dataframe_records": [{"text": "x"}]}).encode())
        assert 400 <= status < 500 and "prompt" in json.dumps(answer)  # wrong column: the message names the right one
        # the model's limits and param checks answer 400 with seqpipe's reason in `message`
        for params, reason in (({"max_new_tokens": 10_000_000, "temperature": 0}, "max_new_tokens=10000000 must be "
                                "between 0 and 1000, this model's limit (serve.max_new_tokens"),
                               ({"top_k": -5}, "top_k=-5 must be >= 0"),
                               ({"temperature": -1.0}, "temperature=-1.0 must be a number >= 0")):
            status, answer = post_json(f"{url}/invocations", json.dumps({**body, "params": params}).encode())
            assert status == 400 and f"seqpipe: {reason}" in answer["message"], answer
        rows = {"dataframe_records": [{"prompt": "x"}] * 300}
        status, answer = post_json(f"{url}/invocations", json.dumps(rows).encode())
        assert status == 400 and "300 rows in one request; this model takes at most 256" in answer["message"]
        assert post_json(f"{url}/invocations", json.dumps(body).encode())[0] == 200  # still serving


def test_new_serving_limits_make_a_new_version_of_the_same_run(pipeline):
    """The limits travel inside the model: changing them registers the same training run again (the champion moves
    to it, equal loss, newest wins), and the new version enforces them."""
    cfg = pipeline["cfg"].copy()
    cfg.serve.max_new_tokens = 50
    result = register.run(cfg)
    assert result["new_version"] and result["promoted"] and result["version"] == 3
    use_tracking_uri(cfg.mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert model.unwrap_python_model().limits["max_new_tokens"] == 50
    with pytest.raises(ValueError, match="must be between 0 and 50"):
        model.predict(pd.DataFrame({"prompt": ["x"]}), params={"max_new_tokens": 51})
    assert register.run(cfg)["version"] == 3  # and once only
