"""The bad-input catalogue (docs/bad-inputs.md): every case runs a real command or stage and checks the message,
a non-zero exit (or the warning), and what is preserved."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_pipeline, tiny_overrides, working_dir, write_corpus, write_reviews

from seqpipe import cli, evaluate, fetch, prepare
from seqpipe.config import compose
from seqpipe.errors import SeqpipeError
from seqpipe.recipes.pypi import verify_sha256

pytestmark = pytest.mark.slow
LM, CLF = "models:/seqpipe-text_file@champion", "models:/seqpipe-text_csv@champion"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny registered language model and classifier in one MLflow store."""
    root = tmp_path_factory.mktemp("catalogue")
    write_corpus(root / "corpus")
    write_reviews(root / "reviews.csv", n=300)
    store = root / "mlflow.db"
    with working_dir(root):
        run_pipeline(root / "lm", [*tiny_overrides(root), "trainer.max_epochs=1"], store)
        run_pipeline(root / "clf", ["recipe=text_csv", f"recipe.fetch.path={root / 'reviews.csv'}",
                                    "recipe.fetch.text_column=review", "recipe.fetch.label_column=sentiment",
                                    "prepare.max_len=12", "model.hidden_size=8", "trainer.max_epochs=1"], store)
    return root, f"sqlite:///{root}/mlflow.db"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # `seqpipe train` runs under Hydra's main, which exits by itself
        code = e.code
    out = capsys.readouterr()
    return code, out.err + out.out


# (case id, command line, expected message); each runs in an empty working directory with the project's conf/.
CLI_CASES = [
    ("unknown-key", ["compose", "model.hiden_size=3"], "unknown config key 'model.hiden_size'; the keys under 'model'"),
    ("unknown-section", ["compose", "modle.cell=gru"], "'modle' is not a section of the config"),
    ("unknown-recipe", ["compose", "recipe=nope"], "Available options in 'recipe'"),
    ("bad-override-syntax", ["compose", "model.cell=["], "no viable alternative"),
    ("wrong-type", ["train", "data.bptt=abc"], "data.bptt='abc' must be a positive integer"),
    ("impossible-dropout", ["train", "model.dropout=1.5"], "model.dropout=1.5 must be a number in [0.0, 1.0)"),
    ("unknown-cell", ["train", "model.cell=transformer"], "choose one of: rnn, gru, lstm"),
    ("tied-sizes", ["train", "model.tie_weights=true"], "needs model.embedding_dim == model.hidden_size"),
    ("bidirectional-lm", ["train", "model.bidirectional=true"], "a language model (task=lm) reads left to right"),
    ("carry-state-classify", ["train", "recipe=sentiment", "train.carry_state=true"], "set train.carry_state=false"),
    ("missing-params", ["stage", "fetch"], "params.yaml not found: run `seqpipe compose`"),
    ("train-before-prepare", ["train", "paths.prepared=nowhere"], "nowhere/vocab.json not found: run the prepare"),
]


@pytest.mark.parametrize("case,argv,message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_config_cases(case, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQPIPE_CONF_DIR", str(ROOT / "conf"))
    code, text = run_cli(argv, capsys)
    assert code == 2 and message in text
    assert not list(tmp_path.iterdir()) or case != "missing-params"  # nothing written on refusal


def _cfg(root: Path, *extra: str):  # noqa: ANN202
    return compose([*tiny_overrides(root), *extra], config_dir=ROOT / "conf")


DATA_CASES = {
    "empty-corpus": (lambda d: (d / "corpus" / "a.txt").write_text("  \n"), "produced no documents"),
    "binary-file": (lambda d: (d / "corpus" / "a.bin.txt").write_bytes(bytes(range(256))),
                    "not valid utf-8: byte 0x80 at offset 128"),
    "non-utf8": (lambda d: (d / "corpus" / "a.txt").write_bytes(b"caf\xe9"), "byte 0xe9 at offset 3"),
    "missing-file": (lambda d: None, "text file not found"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_data_cases(case, tmp_path):
    (tmp_path / "corpus").mkdir()
    make, message = DATA_CASES[case]
    make(tmp_path)
    paths = f"[{tmp_path / 'corpus'}]" if case != "missing-file" else f"[{tmp_path / 'nope.txt'}]"
    with pytest.raises(SeqpipeError, match=message.replace("(", r"\(")):
        fetch.run(_cfg(tmp_path, f"recipe.fetch.paths={paths}"))
    assert not (tmp_path / "data" / "raw").exists()  # no half-written output


def test_huge_line_is_fine(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "one_line.txt").write_text("to be or not to be " * 20_000)  # 380 kB, no newline
    cfg = _cfg(tmp_path)
    fetch.run(cfg)
    assert prepare.run(cfg)["train_tokens"] > 100_000


def test_too_little_data_for_a_batch(tmp_path):
    write_corpus(tmp_path / "corpus", n_docs=3, lines=2)
    cfg = _cfg(tmp_path, "data.batch_size=64", "data.bptt=128")
    fetch.run(cfg)
    prepare.run(cfg)
    from seqpipe import train

    with pytest.raises(SeqpipeError, match=r"train\.npy has .* tokens, fewer than one training chunk"):
        train.run(cfg)
    assert not (tmp_path / "models" / "checkpoints").exists()


def test_csv_cases(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\ncaf\xe9,a\n")
    cfg = compose(["recipe=text_csv", f"recipe.fetch.path={bad}", f"paths.raw={tmp_path}/raw"],
                  config_dir=ROOT / "conf")
    with pytest.raises(SeqpipeError, match="byte 0xe9"):
        fetch.run(cfg)
    ok = tmp_path / "ok.csv"
    ok.write_text("body,label\nhi,a\n")
    cfg.recipe.fetch.path = str(ok)
    with pytest.raises(SeqpipeError, match="text"):  # the missing text column is named
        fetch.run(cfg)
    assert not (tmp_path / "raw").exists()


def test_sha256_mismatch_removes_the_download(tmp_path):
    f = tmp_path / "x.tar.gz"
    f.write_bytes(b"tampered")
    with pytest.raises(SeqpipeError, match="sha256 mismatch"):
        verify_sha256(f, hashlib.sha256(b"original").hexdigest())
    assert not f.exists()


def test_dna_cases(tmp_path):
    from seqpipe.recipes import dna

    with pytest.raises(SeqpipeError, match="apt-get install any2fasta-examples"):
        dna.fetch(str(tmp_path / "missing.gbk.gz"), 512)
    gbk = tmp_path / "x.gbk.gz"
    with gzip.open(gbk, "wt") as f:
        f.write("LOCUS       x  8 bp    DNA     linear   UNK 01-JAN-1980\nORIGIN\n        1 acgtzzac\n//\n")
    with pytest.raises(SeqpipeError, match="position"):
        dna.fetch(str(gbk), 4)


def test_checkpoint_cases(tmp_path):
    (tmp_path / "reports").mkdir()
    write_corpus(tmp_path / "corpus")
    cfg = _cfg(tmp_path)
    fetch.run(cfg)
    prepare.run(cfg)
    ckpt = tmp_path / "models" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    (tmp_path / "reports" / "train.json").write_text(json.dumps(
        {"best_checkpoint": str(ckpt), "run_id": "x", "best_val_loss": 1.0, "epochs": 1, "steps": 1}))
    with pytest.raises(SeqpipeError, match="not found"):
        evaluate.run(cfg)
    ckpt.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(SeqpipeError, match="cannot be loaded.*left as it is"):
        evaluate.run(cfg)
    assert ckpt.read_bytes().startswith(b"PK") and not (tmp_path / "reports" / "metrics.json").exists()


def test_registry_and_prediction_cases(models, tmp_path, capsys):
    root, uri = models
    t = ["--tracking-uri", uri]
    cases = [
        (["generate", "--model", "models:/nope@champion", *t], "no registered model named 'nope'"),
        (["generate", "--model", "models:/seqpipe-text_file@gold", *t], "has no alias @gold"),
        (["generate", "--model", "models:/seqpipe-text_file/9", *t], "has no version 9; versions: 1"),
        (["predict", "--model", LM, "--text", "x", *t], "is a 'lm' model"),
        (["generate", "--model", CLF, *t], "is a 'classify' model"),
        (["predict", "--model", CLF, *t], "give either --text TEXT or --input FILE"),
        (["predict", "--model", CLF, "--input", str(tmp_path / "none.csv"), *t], "input file not found"),
    ]
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"text\ncaf\xe9\n")
    cases.append((["predict", "--model", CLF, "--input", str(bad), *t], "not valid UTF-8 at byte offset"))
    for argv, message in cases:
        code, text = run_cli(argv, capsys)
        assert code == 2 and message in text, (argv, text)


def test_prediction_inputs_that_still_answer(models):
    import mlflow

    from seqpipe.tracking import use_tracking_uri

    _, uri = models
    use_tracking_uri(uri)
    lm, clf = mlflow.pyfunc.load_model(LM), mlflow.pyfunc.load_model(CLF)
    with pytest.warns(UserWarning, match="not in the vocabulary"):  # unknown characters: <unk>, no crash
        assert lm.predict(pd.DataFrame({"prompt": ["€€€"]}), params={"max_new_tokens": 3})[0].startswith("€€€")
    assert len(lm.predict(pd.DataFrame({"prompt": [""]}), params={"max_new_tokens": 5})[0]) <= 5  # empty prompt
    with pytest.warns(UserWarning, match="read as its first 12"):  # over-long input: cut like the training data
        assert clf.predict(pd.DataFrame({"text": ["good " * 100]}))["label"][0] in ("neg", "pos")
    with pytest.warns(UserWarning, match="every token is unknown"):
        clf.predict(pd.DataFrame({"text": ["qqq zzz"]}))
    with pytest.raises(ValueError, match="empty input text at row 0"):
        clf.predict(pd.DataFrame({"text": ["   "]}))
