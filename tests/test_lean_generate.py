"""`seqpipe generate` loads a registered language model from an SQLite store without MLflow, pandas or Lightning
(seqpipe.serving.local), and answers as the MLflow pyfunc does; anything it cannot answer for goes the MLflow way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import clone, working_dir

from seqpipe.data.request_checks import RequestError
from seqpipe.serving import local
from seqpipe.tracking.store import use_tracking_uri

NAME = "seqpipe-text_file"


@pytest.fixture(scope="module")
def store(tiny_lm, tmp_path_factory):
    root = clone(tiny_lm["root"], tmp_path_factory.mktemp("lean") / "project")
    with working_dir(root):
        yield root, f"sqlite:///{root / 'mlflow.db'}"


def test_the_lean_model_generates_what_the_pyfunc_generates(store):
    root, uri = store
    served, task = local.load(f"models:/{NAME}@champion", uri, "generate")
    assert served.model == f"{NAME}/1" and task.__name__ == "seqpipe.tasks.lm_served"
    use_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    for params in ({"max_new_tokens": 30, "temperature": 0.8, "seed": 5}, {"max_new_tokens": 12, "beam_width": 3},
                   {"max_new_tokens": 20, "temperature": 0.0}):
        want = pyfunc.predict(pd.DataFrame({"prompt": ["KING:"]}), params=params)["text"][0]
        assert "KING:" + "".join(served.stream("KING:", params)) == want
    with pytest.raises(RequestError, match=r"max_new_tokens=5000 must be between 0 and 1000"):
        served.stream("x", {"max_new_tokens": 5000})  # the limits the model was registered with


def test_generate_imports_neither_mlflow_nor_pandas_nor_lightning(store):
    root, uri = store
    code = ("import sys; from seqpipe.cli.commands import main; "
            f"rc = main(['generate', '--model', 'models:/{NAME}/1', '--tracking-uri', {uri!r}, '--prompt', 'KING:', "
            "'--max-new-tokens', '15', '--seed', '1']); "
            "print(sorted(m for m in ('mlflow', 'pandas', 'lightning', 'hydra') if m in sys.modules), file=sys.stderr)"
            "; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("KING:") and len(done.stdout.rstrip("\n")) == len("KING:") + 15
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr  # and no warning printed either
    assert "Warning" not in done.stderr


def test_an_alias_that_moves_is_followed_and_what_it_cannot_load_goes_the_mlflow_way(store, tmp_path):
    root, uri = store
    client = mlflow.MlflowClient(uri)
    v1 = client.get_model_version(NAME, "1")
    v2 = client.create_model_version(NAME, v1.source, v1.run_id)
    client.set_registered_model_alias(NAME, "candidate", v2.version)
    served, _ = local.load(f"models:/{NAME}@candidate", uri, "generate")
    assert served.model == f"{NAME}/{v2.version}"  # read from the store on each call: never a stale version
    client.set_registered_model_alias(NAME, "candidate", "1")
    assert local.load(f"models:/{NAME}@candidate", uri, "generate")[0].model == f"{NAME}/1"
    for model_uri, store_uri, command in ((f"models:/{NAME}@gold", uri, "generate"),   # no such alias
                                          ("models:/nope/1", uri, "generate"),          # no such model
                                          (f"models:/{NAME}@champion", uri, "predict"),  # not its command
                                          (f"models:/{NAME}@champion", "http://127.0.0.1:9", "generate"),
                                          (f"models:/{NAME}@champion", f"sqlite:///{tmp_path}/none.db", "generate"),
                                          (str(root / "models"), uri, "generate")):    # a checkpoint
        assert local.load(model_uri, store_uri, command) is None, (model_uri, store_uri, command)


@pytest.mark.slow
def test_seqpipe_export_writes_an_onnx_model_that_generates_what_pytorch_generates(store, tmp_path, capsys):
    from seqpipe import cli
    from seqpipe.serving.onnx_export import load_served

    root, uri = store

    def export(out: Path, *options: str) -> tuple[int, str]:  # the command line, in this process (its import: ~5 s)
        with working_dir(root):
            code = cli.main(["export", "--model", f"models:/{NAME}@champion", "--tracking-uri", uri, "--out", str(out),
                             *options])
        return code, capsys.readouterr().err

    for quantize in ([], ["--quantize", "int8"]):
        out = tmp_path / f"onnx{len(quantize)}"
        code, err = export(out, *quantize)
        assert code == 0, err[-2000:]
        assert "max |logit difference| vs PyTorch" in err and f"{NAME} v1" in err
        assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.int8.onnx" if quantize else
                                                         "model.onnx", "vocab.json"]
    served, _ = local.load(f"models:/{NAME}@champion", uri, "generate")
    onnx = load_served(tmp_path / "onnx0")
    greedy = {"max_new_tokens": 25, "temperature": 0.0}
    assert "".join(onnx.stream("KING:", greedy)) == "".join(served.stream("KING:", greedy))
    assert len("".join(load_served(tmp_path / "onnx2").stream("KING:", greedy))) > 0
    tags = mlflow.MlflowClient(uri).get_model_version(NAME, "1").tags
    assert tags["export.onnx"].endswith("/export/v1-onnx") and tags["export.onnx.int8"].endswith("/export/v1-onnx-int8")
    code, err = export(tmp_path / "onnx0")
    assert code == 2 and "exists and is not empty" in err  # never over an earlier export
