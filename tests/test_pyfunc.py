"""The served model's checks of a request: generation params and the limits stored in the model (no model file
needed: the checks come before any network runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from seqpipe.data.request_checks import RequestError, generation_params
from seqpipe.data.requests import InputError
from seqpipe.data.text_tokens import CharTokenizer
from seqpipe.serving.pyfunc import SeqpipeModel
from seqpipe.serving.served import DEFAULT_LIMITS, LEGACY_LIMITS

LIMITS = {**LEGACY_LIMITS, "max_rows": 3, "max_input_tokens": 10, "max_total_tokens": 20, "max_new_tokens": 50,
          "max_total_new_tokens": 100}


@pytest.mark.parametrize("params,message", [
    ({"top_k": -5}, "top_k=-5 must be >= 0"),
    ({"temperature": -1.0}, "temperature=-1.0 must be a number >= 0 (0 = greedy)"),
    ({"temperature": float("nan")}, "temperature=nan must be a number >= 0"),
    ({"temperature": float("inf")}, "temperature=inf must be a number >= 0"),
    ({"max_new_tokens": -1}, "max_new_tokens=-1 must be between 0 and 50"),
    ({"max_new_tokens": 10_000_000}, "max_new_tokens=10000000 must be between 0 and 50, this model's limit"),
    ({"seed": -2}, "seed=-2 must be >= 0, or -1"),
    ({"top_k": 2.5}, "top_k=2.5 must be an integer"),
    ({"bogus": 1}, "unknown params ['bogus']; this model takes: max_new_tokens, temperature, top_k, seed, "
                   "beam_width, logprobs"),
    ({"beam_width": 0, "max_new_tokens": 5}, "beam_width=0 must be between 1 and 16"),
    ({"logprobs": "yes", "max_new_tokens": 5}, "logprobs='yes' must be true or false"),
])
def test_bad_generation_params_are_refused_with_the_reason(params, message):
    with pytest.raises(RequestError) as e:  # the served model answers it as InputError, HTTP 400 (test_pyfunc)
        generation_params(params, LIMITS)
    assert message in str(e.value)


def test_good_generation_params_get_defaults():
    assert generation_params({"temperature": 0, "max_new_tokens": 50}, LIMITS) == {
        "max_new_tokens": 50, "temperature": 0.0, "top_k": 0, "seed": -1, "beam_width": 1, "logprobs": False,
        "bos": False}


def _model() -> SeqpipeModel:
    model = SeqpipeModel()
    model.limits, model.tokenizer = LIMITS, CharTokenizer()
    return model


@pytest.mark.parametrize("texts,new,message", [
    (["a"] * 4, 0, "4 rows in one request; this model takes at most 3 (serve.max_rows)"),
    (["a", "b" * 11], 0, "row 1: 11 tokens; this model takes at most 10 per row (serve.max_input_tokens)"),
    (["a" * 10, "b" * 10, "c"], 0, "21 input tokens in all; this model takes at most 20 (serve.max_total_tokens)"),
    (["a", "b", "c"], 40, "asks for 120 new tokens (3 rows x max_new_tokens=40); this model makes at most 100"),
])
def test_requests_over_the_limits_are_refused_naming_the_limit(texts, new, message):
    model = _model()
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.check_size(model.tokenize(texts), new)


def test_requests_within_the_limits_pass():
    model = _model()
    model.check_size(model.tokenize(["a" * 10, "b" * 10]), 50)


OLD = Path(__file__).parent / "data" / "models-0.1"


@pytest.mark.parametrize("kind", ["lm", "classifier"])
def test_models_registered_by_seqpipe_0_1_load_and_predict_with_todays_code(kind):
    """Registered models pickle the class name and hold the weights in the old layout (no limits stored): they load,
    predict, name their version, and get the limits of models registered before limits existed."""
    import mlflow

    model = mlflow.pyfunc.load_model(str(OLD / kind))
    if kind == "lm":
        out = model.predict(pd.DataFrame({"prompt": ["KING:"]}), params={"max_new_tokens": 10, "seed": 1})
        assert out["text"][0].startswith("KING:") and len(out["text"][0]) == len("KING:") + 10
        assert out["model"][0] == "seqpipe-text_file/1"
        with pytest.raises(InputError, match="must be between 0 and 1000") as e:
            model.predict(pd.DataFrame({"prompt": ["KING:"]}), params={"max_new_tokens": 10_000_000})
        assert e.value.get_http_status_code() == 400  # the lean checks' RequestError, answered as HTTP 400
        # today's decoding reaches an old model too: beam search and per-token log-probabilities
        served = model.unwrap_python_model()
        greedy = served.predict(None, pd.DataFrame({"prompt": ["KING:"]}),
                                {"max_new_tokens": 8, "temperature": 0, "logprobs": True})
        pieces = json.loads(greedy["token_logprobs"][0])
        assert "".join(p for p, _ in pieces) == greedy["text"][0][len("KING:"):]
        assert greedy["logprob"][0] == pytest.approx(sum(lp for _, lp in pieces), abs=1e-3) and greedy["logprob"][0] < 0
        beam5 = served.predict(None, pd.DataFrame({"prompt": ["KING:"]}), {"max_new_tokens": 8, "beam_width": 5})
        assert beam5["text"][0].startswith("KING:") and "token_logprobs" not in beam5
    else:
        out = model.predict(pd.DataFrame({"text": ["a good film", "an awful film"]}))
        assert set(out["label"]) <= {"neg", "pos"} and list(out["model"]) == ["seqpipe-text_csv/1"] * 2
        assert out[["prob_neg", "prob_pos"]].sum(axis=1).round(5).tolist() == [1.0, 1.0]
    limits = model.unwrap_python_model().limits
    assert limits == DEFAULT_LIMITS and LEGACY_LIMITS.items() <= limits.items()


def test_an_internal_fault_is_answered_without_its_stack_trace():
    """MLflow's own scoring `invocations`, guarded as `mlflow models serve` guards it when it loads a seqpipe model
    (an old one here): a refusal is answered 400 with the reason alone (not the request echoed back), a fault inside
    the model 500 with one line and no stack trace, a body over the limit 413 before it is parsed."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    from seqpipe.serving import guard as server_guard

    model = mlflow.pyfunc.load_model(str(OLD / "lm"))
    invocations = server_guard.guard(scoring_server.invocations, scoring_server.InvocationsResponse, 2_000)

    def answer(body: dict) -> tuple[int, dict]:
        try:
            r = invocations(json.dumps(body).encode(), "application/json", model, model.metadata.get_input_schema())
            return r.status, json.loads(r.response)
        except MlflowException as e:  # what the server turns into its answer
            return e.get_http_status_code(), json.loads(e.serialize_as_json())

    request = {"dataframe_split": {"columns": ["prompt"], "data": [["KING:"]]}}
    status, body = answer({**request, "params": {"max_new_tokens": 10_000_000}})
    assert status == 400 and body["message"].startswith("seqpipe: max_new_tokens=10000000 must be between 0 and"), body
    status, body = answer({"dataframe_split": {"columns": ["prompt"], "data": [[5]]}})  # MLflow's schema check
    assert status == 400 and "\n" not in body["message"] and "Failed to predict data" not in body["message"], body
    status, body = answer({"dataframe_split": {"columns": ["text"], "data": [["KING:"]]}})  # the wrong column
    assert status == 400 and body["message"] == ("the request does not match this model's input schema ['prompt': "
                                                 "string (required)]: Model is missing inputs ['prompt']. Note that "
                                                 "there were extra inputs: ['text']."), body
    assert answer({**request, "params": {"max_new_tokens": 3}})[0] == 200
    model.unwrap_python_model().net = None  # a fault inside the model
    status, body = answer({**request, "params": {"max_new_tokens": 3}})
    assert status == 500 and body["message"] == ("seqpipe: the model could not answer this request (an internal "
                                                 "error, logged by the server)"), body
    assert "stack_trace" not in body and "Traceback" not in json.dumps(body)
    status, body = answer({"dataframe_split": {"columns": ["prompt"], "data": [["x" * 3000]]}})
    assert status == 413 and "(serve.max_request_mb)" in body["message"], body


def test_a_tagger_registered_before_tasks_were_modules_loads_and_tags_with_todays_code():
    """Weights saved with task/labels/vocab_size (no meta.json inside): today's code builds its meta and tags."""
    import mlflow

    model = mlflow.pyfunc.load_model(str(Path(__file__).parent / "data" / "models-before-tasks" / "tagger"))
    out = model.predict(pd.DataFrame({"text": ["ACGTACGTTT", "GGC"]}))
    assert list(out.columns) == ["tags", "unk_fraction", "confidence", "model", "run_id"]
    assert [len(t) for t in out["tags"]] == [10, 3] and set("".join(out["tags"])) <= set("+-.")
    assert out["model"][0] == "seqpipe-dna/1" and model.unwrap_python_model().meta["inputs"]["kind"] == "tokens"
    with pytest.raises(InputError, match="row 0: .*'Z'"):
        model.predict(pd.DataFrame({"text": ["ACZ"]}))


def test_a_model_from_another_environment_is_named_in_one_warning_line(tmp_path, capsys):
    """`seqpipe predict`/`export` load without MLflow's slow requirement scan and check the model's own pins: a
    pinned version that differs, or another Python, is named in one line; the same environment prints nothing."""
    import re
    import shutil

    from seqpipe.cli.predict import load_model

    model = tmp_path / "classifier"
    shutil.copytree(Path(__file__).parent / "data" / "models-0.1" / "classifier", model)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lines = (model / "requirements.txt").read_text().splitlines()
    (model / "requirements.txt").write_text("\n".join(f"{line}\n" for line in lines if "==" not in line)
                                            + "torch==2.13.0\nmlflow==3.17.2\n")
    load_model(str(model), uri, "predict")
    assert "warning" not in capsys.readouterr().err  # the environment these fixtures were made in (and pinned)
    (model / "requirements.txt").write_text("torch==0.4.1\nnot-a-package-of-this-env==1.0\npandas\n")
    mlmodel = model / "MLmodel"
    mlmodel.write_text(re.sub(r"python_version: [\d.]+", "python_version: 3.7.1", mlmodel.read_text()))
    loaded = load_model(str(model), uri, "predict")
    err = capsys.readouterr().err
    assert err.count("seqpipe: warning:") == 1 and "torch==0.4.1 (here: 2.13.0" in err, err
    assert "not-a-package-of-this-env==1.0 (here: not installed)" in err and "Python 3.7.1 (here: 3.11" in err
    assert loaded.predict(pd.DataFrame({"text": ["a good film"]}))["label"].iloc[0]  # a warning, not a refusal
