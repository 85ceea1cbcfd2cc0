"""Classification (text_csv) and tagging (dna) on tiny data: prepare -> train -> evaluate -> register -> predict."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from Bio.Seq import Seq
from Bio.SeqFeature import SeqFeature, SimpleLocation
from Bio.SeqRecord import SeqRecord
from conftest import CONF, FEW_BATCHES, models_serve, post_json, run_pipeline, working_dir, write_reviews

from seqpipe import cli, fetch, prepare
from seqpipe.cli.predict import generate
from seqpipe.config import compose
from seqpipe.data.request_checks import RequestError
from seqpipe.errors import SeqpipeError
from seqpipe.serving import local
from seqpipe.tracking.store import use_tracking_uri

pytestmark = pytest.mark.slow
def write_genbank(path: Path, n: int = 6000, seed: int = 0) -> None:
    rng = random.Random(seed)
    seq = "".join(rng.choice("ACGT") for _ in range(n))
    features, pos = [], 0
    while pos < n - 300:  # alternating coding stretches on each strand, with a marker codon the net can learn
        start = pos + rng.randint(50, 150)
        end = min(n, start + rng.randint(90, 240))
        strand = rng.choice([1, -1])
        seq = seq[:start] + ("ATG" if strand == 1 else "CAT") + seq[start + 3:]
        features.append(SeqFeature(SimpleLocation(start, end, strand=strand), type="CDS"))
        pos = end
    record = SeqRecord(Seq(seq), id="toy.1", name="toy", annotations={"molecule_type": "DNA"}, features=features)
    with open(path, "w") as f:
        from Bio import SeqIO

        SeqIO.write(record, f, "genbank")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    write_reviews(root / "reviews.csv")
    with working_dir(root):
        yield root, run_pipeline(root, [
            "recipe=text_csv", f"recipe.fetch.path={root / 'reviews.csv'}", "recipe.fetch.text_column=review",
            "recipe.fetch.label_column=sentiment", "recipe.fetch.source_column=site", "recipe.labels=[neg,pos]",
            "prepare.min_freq=1", "prepare.val_fraction=0.15", "prepare.test_fraction=0.15",
            "model.embedding_dim=16", "model.hidden_size=16", "data.batch_size=16", "trainer.max_epochs=6",
            "optim.lr=0.01"])


def test_classifier_learns_and_reports(classifier):
    root, out = classifier
    m = out["metrics"]
    assert m["test/acc"] > 0.85 and m["test/f1"] > 0.85
    assert {k for k in m if k.startswith("test/f1_per_class/")} == {"test/f1_per_class/neg", "test/f1_per_class/pos"}
    assert {k.split("/")[2] for k in m if k.startswith("test/per_source/")} == {"siteA", "siteB"}
    assert (root / "reports" / "evaluate" / "confusion.png").stat().st_size > 1000
    confusion = (root / "reports" / "evaluate" / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) - 1 == m["test/count"]
    assert json.loads((root / "reports" / "data.json").read_text())["train_examples"] > 350
    run = mlflow.MlflowClient(out["cfg"].mlflow.tracking_uri).get_run(
        json.loads((root / "reports" / "train.json").read_text())["run_id"])
    assert {"val/acc", "val/f1", "test/acc", "test/f1_per_class/pos", "test/per_source/siteA/acc"} <= \
        set(run.data.metrics)
    assert {k: run.data.metrics[k] for k in m} == pytest.approx(m)  # one name per metric: metrics.json = MLflow


def test_classifier_predicts_text_and_files(classifier, capsys, tmp_path):
    root, out = classifier
    uri = out["cfg"].mlflow.tracking_uri
    model = "models:/seqpipe-text_csv@champion"
    assert cli.main(["predict", "--model", model, "--text", "a really superb film", "--tracking-uri", uri]) == 0
    line = capsys.readouterr().out
    assert "label=pos" in line and "prob_neg=" in line and "prob_pos=" in line
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": [1, 2, 3], "text": ["so dull", "lovely cast", "awful plot"]}).to_csv(src, index=False)
    assert cli.main(["predict", "--model", model, "--input", str(src), "--output", str(tmp_path / "out.csv"),
                     "--tracking-uri", uri]) == 0
    result = pd.read_csv(tmp_path / "out.csv")
    assert result["label"].tolist() == ["neg", "pos", "neg"] and result["id"].tolist() == [1, 2, 3]
    assert ((result["prob_neg"] + result["prob_pos"]) - 1).abs().max() < 1e-5
    # bad inputs: a missing column, a model of another task, text made only of unknown words
    assert cli.main(["predict", "--model", model, "--input", str(src), "--column", "review",
                     "--tracking-uri", uri]) == 2
    assert "has no column 'review'; its columns: id, text" in capsys.readouterr().err
    with pytest.raises(SeqpipeError, match="is a 'classify' model.*seqpipe predict"):
        generate(model, ["x"], uri)
    with pytest.warns(UserWarning, match="every token is unknown"):
        use_tracking_uri(uri)
        mlflow.pyfunc.load_model(model).predict(pd.DataFrame({"text": ["zzyzx qwerty"]}))


def test_predict_text_loads_the_model_lean_and_answers_as_the_pyfunc(classifier, tagger):
    """`seqpipe predict --text` loads a text model without MLflow, pandas or Lightning (seqpipe.serving.local) and
    gives the pyfunc's answers: same columns, labels and probabilities, a long input cut as the pyfunc cuts it (or
    every position read, tagging), the same refusals."""
    long_review = "a really superb film " * 100  # 400 tokens: cut to the recipe's max_len 256
    for (_root, out), name, texts in ((classifier, "seqpipe-text_csv", ["so dull", "lovely cast", long_review]),
                                      (tagger, "seqpipe-dna", ["ATGAAACGCATTAGC", "acgtNNRY" * 60])):
        uri = out["cfg"].mlflow.tracking_uri
        served, module = local.load(f"models:/{name}@champion", uri, "predict")
        assert module.__name__ == "seqpipe.tasks.classify_served" and served.model == f"{name}/1"
        use_tracking_uri(uri)
        want = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(pd.DataFrame({"text": texts}))
        task = served.meta["task"]
        xs, unk = served.encode_texts(texts, task)
        got = pd.DataFrame(module.answer_rows(served, task, served.fit_length(xs), unk))
        assert got.columns.tolist() == want.columns.tolist()[:-2]  # then model and run_id
        pd.testing.assert_frame_equal(got, want[got.columns], rtol=1e-6)
        with pytest.raises(RequestError, match="row 0: empty input text: nothing to"):
            served.encode_texts([""], task)
    assert len(got["tags"][1]) == 480  # every position tagged


def test_predict_text_imports_neither_mlflow_nor_pandas_nor_lightning(classifier):
    root, out = classifier
    uri = out["cfg"].mlflow.tracking_uri
    code = ("import sys; from seqpipe.cli.commands import main; "
            f"rc = main(['predict', '--model', 'models:/seqpipe-text_csv@champion', '--tracking-uri', {uri!r}, "
            "'--text', 'a really superb film']); "
            "print(sorted(m for m in ('mlflow', 'pandas', 'lightning', 'hydra') if m in sys.modules), file=sys.stderr)"
            "; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == ["[]"], done.stderr  # no warning either
    use_tracking_uri(uri)
    row = mlflow.pyfunc.load_model("models:/seqpipe-text_csv@champion").predict(
        pd.DataFrame({"text": ["a really superb film"]})).iloc[0]
    assert done.stdout == "\t".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()) + \
        "\n"


def test_a_server_running_the_classifier_in_onnx_runtime_answers_as_pytorch(classifier):
    """`SEQPIPE_SERVE_RUNTIME=onnx mlflow models serve --workers 2`: each worker exports the network when it loads
    it, says so in the log, and answers as the model does in PyTorch in-process."""
    root, out = classifier
    uri, model = out["cfg"].mlflow.tracking_uri, "models:/seqpipe-text_csv@champion"
    texts = ["so dull", "lovely cast", "a really superb film " * 100, "awful plot, awful acting"]
    use_tracking_uri(uri)
    want = mlflow.pyfunc.load_model(model).predict(pd.DataFrame({"text": texts}))
    body = json.dumps({"dataframe_records": [{"text": t} for t in texts]}).encode()
    loaded = "in ONNX Runtime, 1 thread(s) per network call, batching"
    with models_serve(model, uri, root, workers=2, env={"SEQPIPE_SERVE_RUNTIME": "onnx"}) as url:
        answers = [post_json(f"{url}/invocations", body) for _ in range(4)]  # both workers, most likely
        # /ping answers once one worker is up: the other may still be loading, so wait for it before the server stops
        deadline = time.monotonic() + 60
        while (root / "serve.log").read_text().count(loaded) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
    for status, answer in answers:
        assert status == 200, answer
        got = pd.DataFrame(answer["predictions"])
        assert got["label"].tolist() == want["label"].tolist()
        assert (got[["prob_neg", "prob_pos"]] - want[["prob_neg", "prob_pos"]]).abs().max().max() < 1e-4
    log = (root / "serve.log").read_text()
    assert log.count(loaded) == 2, log[-3000:]


def test_labels_outside_the_configured_set(tmp_path):
    write_reviews(tmp_path / "r.csv", n=50)
    cfg = compose(["recipe=text_csv", f"recipe.fetch.path={tmp_path / 'r.csv'}", "recipe.fetch.text_column=review",
                   "recipe.fetch.label_column=sentiment", "recipe.labels=[neg,positive]",
                   f"paths.raw={tmp_path}/raw", f"paths.prepared={tmp_path}/prepared",
                   f"paths.reports={tmp_path}/reports"], config_dir=CONF)
    fetch.run(cfg)
    with pytest.raises(SeqpipeError, match=r"labels outside the configured set \['neg', 'positive'\]: 'pos'"):
        prepare.run(cfg)
    assert not (tmp_path / "prepared").exists()


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag")
    write_genbank(root / "toy.gbk")
    with working_dir(root):
        yield root, run_pipeline(root, [
            "recipe=dna", f"recipe.fetch.path={root / 'toy.gbk'}", "recipe.fetch.window=200",
            "prepare.val_fraction=0.2", "prepare.test_fraction=0.2", "model.hidden_size=16", "model.num_layers=1",
            "data.batch_size=4", *FEW_BATCHES])  # its test reads the reports and the tags' shape, not the accuracy


def test_tagger_reports_per_base_scores_and_tags(tagger):
    root, out = tagger
    m = out["metrics"]
    per_base = {k.rsplit("/", 1)[1] for k in m if k.startswith("test/f1_per_class/")}
    assert per_base == {"plus", "minus", "dot"} and m["test/count"] == out["stats"]["test_tokens"]
    assert 0.0 < m["test/acc"] <= 1.0
    use_tracking_uri(out["cfg"].mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/seqpipe-dna@champion")
    seq = "ATGAAACGCATTAGCNNRYacgt"
    tags = model.predict(pd.DataFrame({"text": [seq]}))["tags"][0]
    assert len(tags) == len(seq) and set(tags) <= {"+", "-", "."}
    with pytest.raises(ValueError, match="not a DNA letter: 'Z' at position 3"):
        model.predict(pd.DataFrame({"text": ["ACGZ"]}))
