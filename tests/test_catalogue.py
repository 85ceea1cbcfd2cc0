"""The bad-input catalogue (docs/bad-inputs.md): every case runs a real command or stage and checks the message,
a non-zero exit (or the warning), and what is preserved."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CONF, clone, here_overrides, run_pipeline, tiny_overrides, working_dir, write_corpus, write_reviews

from seqpipe import cli, evaluate, fetch, prepare
from seqpipe.config import compose
from seqpipe.errors import SeqpipeError
from seqpipe.recipes.pypi import verify_sha256

pytestmark = pytest.mark.slow
LM, CLF = "models:/seqpipe-text_file@champion", "models:/seqpipe-text_csv@champion"
FRAMES = "models:/seqpipe-ts_file@champion"  # a frames classifier (the frames_model fixture)


@pytest.fixture(scope="module")
def models(tiny_lm, tmp_path_factory):
    """A tiny registered language model (the session's, conftest.tiny_lm, in a copy: its folders at the top) and
    classifier (clf/) in one MLflow store."""
    root = clone(tiny_lm["root"], tmp_path_factory.mktemp("catalogue") / "project")
    write_reviews(root / "reviews.csv", n=300)
    store = root / "mlflow.db"
    with working_dir(root):
        run_pipeline(root / "clf", ["recipe=text_csv", f"recipe.fetch.path={root / 'reviews.csv'}",
                                    "recipe.fetch.text_column=review", "recipe.fetch.label_column=sentiment",
                                    "prepare.max_len=12", "model.hidden_size=8", "trainer.max_epochs=1"], store)
    return root, f"sqlite:///{root}/mlflow.db"


@pytest.fixture(scope="module")
def frames_model(tmp_path_factory):
    """A tiny registered frames classifier (recipe=ts_file: 2 channels, classes a and b, 30 train and 10 test cases
    of 12 steps) in a store of its own, and the pyfunc loaded from it."""
    import mlflow

    from seqpipe.tracking.store import use_tracking_uri

    root = tmp_path_factory.mktemp("frames")
    train, test = write_ts(root / "walk_TRAIN.ts", 30), write_ts(root / "walk_TEST.ts", 10, seed=1)
    with working_dir(root):
        run_pipeline(root / "run", ["recipe=ts_file", f"recipe.fetch.train={train}", f"recipe.fetch.test={test}",
                                    "model.hidden_size=8", "model.embedding_dim=8", "trainer.max_epochs=1",
                                    "train.log_every_n_steps=1"],
                     root / "mlflow.db")
    uri = f"sqlite:///{root}/mlflow.db"
    use_tracking_uri(uri)
    return root, uri, mlflow.pyfunc.load_model(FRAMES)


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
    ("augment-for-tokens", ["train", "data.augment.speed=0.2"],
     "data.augment.speed=0.2 changes frames at random, but task=lm does not warp its inputs (classify and regress on "
     "frames do): set data.augment.speed=0"),
    ("missing-params", ["stage", "fetch"], "params.yaml not found: run `seqpipe compose`"),
    ("train-before-prepare", ["train", "paths.prepared=nowhere"], "nowhere/meta.json not found: run the prepare"),
    ("ts-file-without-train", ["compose", "recipe=ts_file"], "recipe.fetch.train has no value: give it, e.g. "
     "`seqpipe compose recipe.fetch.train=...`"),
    ("added-model-key", ["compose", "+model.extra=1"], "'+model.extra=1' adds a key that seqpipe does not read"),
    ("added-model-key-train", ["train", "+model.extra=1"], "adds a key that seqpipe does not read"),
    ("negative-top-k", ["generate", "--top-k", "-5"], "argument --top-k: -5 must be >= 0"),
    ("negative-max-new-tokens", ["generate", "--max-new-tokens", "-1"], "argument --max-new-tokens: -1 must be >= 0"),
    ("nan-temperature", ["generate", "--temperature", "nan"], "argument --temperature: nan must be a finite number"),
    ("negative-temperature", ["generate", "--temperature", "-1"], "argument --temperature: -1 must be a finite"),
    ("frames-for-lm", ["train", "prepare.inputs=frames"],
     "prepare.inputs=frames does not work with task=lm: a language model predicts the next token; set "
     "prepare.inputs=tokens"),
    ("gpu-trainer-without-gpu", ["train", "trainer=gpu"],
     "trainer.accelerator=gpu needs a CUDA GPU, and this machine has none: train with trainer=cpu"),
    ("ddp-trainer-without-gpu", ["train", "trainer=ddp"],
     "needs a CUDA GPU, and this machine has none: train with trainer=ddp_cpu (DDP over CPU processes) or trainer=cpu"),
    ("tune-unknown-space-key", ["tune", "+tune.space.model.hiden_size.choice=[1,2]"],
     "tune.space names 'model.hiden_size', which is not a key of the config; the keys under 'model' are: cell, "),
    ("tune-empty-choice", ["tune", "tune.space.model.num_layers.choice=[]"],
     "tune.space.model.num_layers.choice is empty: give the values"),
    ("tune-low-above-high", ["tune", "tune.space.optim.lr.loguniform=[0.1,0.01]"],
     "tune.space.optim.lr.loguniform=[0.1, 0.01]: low must be below high"),
    ("tune-log-range-with-zero", ["tune", "tune.space.optim.lr.loguniform=[0,0.1]"],
     "includes values <= 0, which have no logarithm: make low > 0, or use uniform/randint"),
    ("tune-refused-value", ["tune", "tune.space.model.cell.choice=[gru,transformer]"],
     "tune.space.model.cell: the value 'transformer' is refused: model.cell='transformer' is not allowed"),
    ("tune-bad-reduction-factor", ["tune", "tune.scheduler.reduction_factor=1"],
     "tune.scheduler.reduction_factor=1 must be above 1"),
    ("tune-unreachable-address", ["tune", "tune.address=127.0.0.1:1"],
     "cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused): start it with `ray start --head`"),
    ("tune-resume-without-sweep", ["tune", "--resume"], "no sweep to resume in "),
]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")


@pytest.mark.parametrize("case,argv,message", [pytest.param(*c, id=c[0], marks=NO_GPU if "gpu" in c[0] else ())
                                                for c in CLI_CASES])
def test_cli_config_cases(case, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQPIPE_CONF_DIR", str(CONF))
    start = time.monotonic()
    code, text = run_cli(argv, capsys)
    assert code == 2 and message in text, text
    assert list(tmp_path.iterdir()) == []  # nothing written on refusal: no params.yaml, no Hydra outputs/ folder
    assert time.monotonic() - start < 5  # refused before torch, Lightning or MLflow load


def _cfg(root: Path, *extra: str):  # noqa: ANN202
    return compose([*tiny_overrides(root), *extra], config_dir=CONF)


def _text_files(content: bytes | str | None, name: str = "a.txt"):  # noqa: ANN202
    """A text_file recipe over tmp/corpus holding one file (None: a path that does not exist)."""
    def make(d: Path) -> list[str]:
        if content is None:
            return ["recipe=text_file", f"recipe.fetch.paths=[{d / 'nope.txt'}]"]
        f = d / "corpus" / name
        f.write_bytes(content) if isinstance(content, bytes) else f.write_text(content)
        return ["recipe=text_file", f"recipe.fetch.paths=[{d / 'corpus'}]"]
    return make


def _csv(content: bytes):  # noqa: ANN202
    def make(d: Path) -> list[str]:
        (d / "in.csv").write_bytes(content)
        return ["recipe=text_csv", f"recipe.fetch.path={d / 'in.csv'}"]
    return make


def _genbank(sequence: str | None):  # noqa: ANN202
    def make(d: Path) -> list[str]:
        path = d / "x.gbk.gz"
        if sequence is not None:
            with gzip.open(path, "wt") as f:
                f.write(f"LOCUS       x  {len(sequence)} bp    DNA     linear   UNK 01-JAN-1980\nORIGIN\n"
                        f"        1 {sequence}\n//\n")
        return ["recipe=dna", f"recipe.fetch.path={path}", "recipe.fetch.window=4"]
    return make


# A .ts header (lines 1-8: 2 dimensions, classes a and b); the cases follow from line 9.
TS_HEAD = ("@problemName walk\n@timeStamps false\n@missing true\n@univariate false\n@dimensions 2\n"
           "@equalLength false\n@classLabel true a b\n@data\n")
TS_OK = "1,2,3:4,5,6:a"  # a good case: the first, on line 9


def write_ts(path: Path, n: int, seed: int = 0, target: bool = False, length: int = 12) -> Path:
    """A .ts file of `n` cases of 2 channels x `length` steps: classes a/b (their channels' means differ), or with
    `target` a regression file (@targetLabel true) whose target is the mean of channel 1."""
    rng = random.Random(seed)
    labels = "@classLabel false\n@targetLabel true\n" if target else "@classLabel true a b\n"
    lines = [TS_HEAD.replace("@classLabel true a b\n", labels).replace("@equalLength false", "@equalLength true")]
    for _ in range(n):
        label = rng.choice("ab")
        shift = 1.0 if label == "a" else -1.0
        dims = [[shift * rng.random() + rng.gauss(0, 0.2) for _ in range(length)] for _ in range(2)]
        end = f"{sum(dims[0]) / length:.4f}" if target else label
        lines.append(":".join(",".join(f"{v:.4f}" for v in dim) for dim in dims) + f":{end}\n")
    path.write_text("".join(lines))
    return path


def _ts(*cases: str, head: str = TS_HEAD, extra: tuple[str, ...] = ()):  # noqa: ANN202
    """A ts_file recipe over tmp/corpus/walk_TRAIN.ts: `head`, then one case per line (the first on line 9)."""
    def make(d: Path) -> list[str]:
        path = d / "corpus" / "walk_TRAIN.ts"
        path.write_text(head + "".join(f"{c}\n" for c in cases))
        return ["recipe=ts_file", f"recipe.fetch.train={path}", *extra]
    return make


TS_FILE = "{d}/corpus/walk_TRAIN.ts"  # how the messages name the .ts file ({d}: the test's tmp_path)

# (make the input in tmp_path and return the overrides, expected message); each runs the fetch stage.
FETCH_CASES = {
    "empty-corpus": (_text_files("  \n"), "produced no documents"),
    "binary-file": (_text_files(bytes(range(256)), "a.bin.txt"), "not valid utf-8: byte 0x80 at offset 128"),
    "non-utf8": (_text_files(b"caf\xe9"), "byte 0xe9 at offset 3"),
    "missing-file": (_text_files(None), "text file not found"),
    "csv-latin1": (_csv(b"text,label\ncaf\xe9,a\n"), "byte 0xe9"),
    "csv-no-text-column": (_csv(b"body,label\nhi,a\n"), "column 'text'"),
    "genbank-missing": (_genbank(None), "apt-get install any2fasta-examples"),
    "dna-bad-letter": (_genbank("acgtzzac"), "record x, position 5: 'Z' is not a DNA base"),
    "ts-unknown-header-key": (_ts(TS_OK, head=TS_HEAD.replace("@missing true", "@colour blue")),
                              f"{TS_FILE}, line 3: unknown header key '@colour'; the .ts header keys are "
                              "@problemName, @timeStamps"),
    "ts-class-label-without-labels": (_ts(TS_OK, head=TS_HEAD.replace("@classLabel true a b", "@classLabel true")),
                                      f"{TS_FILE}, line 7: @classLabel true declares no labels; list the class "
                                      "labels after it"),
    "ts-undeclared-label": (_ts(TS_OK, "1,2,3:4,5,6:c"),
                            f"{TS_FILE}, line 10: class label 'c' is not declared in @classLabel (a b)"),
    "ts-missing-but-declared-none": (_ts(TS_OK, "1,?,3:4,5,6:b", head=TS_HEAD.replace("@missing true",
                                                                                       "@missing false")),
                                     f"{TS_FILE}, line 10: the case has missing values ('?') but the header says "
                                     "'@missing false'"),
    "ts-ragged-dimensions": (_ts(TS_OK, "1,2,3:4,5:b"),
                             f"{TS_FILE}, line 10: dimension 2 has 2 values but dimension 1 has 3; all dimensions "
                             "of one case need the same length"),
    "ts-not-a-number": (_ts(TS_OK, "1,abc,3:4,5,6:b"),
                        f"{TS_FILE}, line 10: value 'abc' in dimension 1 is not a number"),
    "ts-empty-dimension": (_ts(TS_OK, "1,2,3::b"), f"{TS_FILE}, line 10: dimension 2 is a series of length 0"),
    "ts-target-not-a-number": (_ts("1,2,3:4,5,6:0.5", "1,2,3:4,5,6:abc", head=TS_HEAD.replace(
        "@classLabel true a b", "@classLabel false\n@targetLabel true"), extra=("task=regress",)),
        f"{TS_FILE}, line 11: target 'abc' is not a number; @targetLabel true needs a number after the last ':'"),
}


@pytest.mark.parametrize("case", FETCH_CASES)
def test_fetch_cases(case, tmp_path):
    (tmp_path / "corpus").mkdir()
    make, message = FETCH_CASES[case]
    cfg = compose([*make(tmp_path), f"paths.raw={tmp_path / 'data/raw'}"], config_dir=CONF)
    with pytest.raises(SeqpipeError, match=re.escape(message.replace("{d}", str(tmp_path)))):
        fetch.run(cfg)
    assert not (tmp_path / "data" / "raw").exists()  # no half-written output


def _frames_file(missing: str | None = None, target: bool = False, extra: tuple[str, ...] = ()):  # noqa: ANN202
    """A ts_file recipe over tmp/corpus/walk_TRAIN.ts (30 cases from write_ts); with `missing`, the 4th case's
    4th step of dimension 1 (example 'walk/train/3', step 3, feature 0) is written as `missing` ('?', 'inf')."""
    def make(d: Path) -> list[str]:
        path = write_ts(d / "corpus" / "walk_TRAIN.ts", 30, target=target)
        if missing is not None:
            lines = path.read_text().splitlines()
            dims = lines[8 + 3].split(":")  # the header takes lines 1-8
            values = dims[0].split(",")
            values[3] = missing
            lines[8 + 3] = ":".join([",".join(values), *dims[1:]])
            path.write_text("\n".join(lines) + "\n")
        return ["recipe=ts_file", f"recipe.fetch.train={path}", *extra]
    return make


def _reviews(*extra: str):  # noqa: ANN202
    def make(d: Path) -> list[str]:
        write_reviews(d / "corpus" / "reviews.csv", n=60)
        return ["recipe=text_csv", f"recipe.fetch.path={d / 'corpus' / 'reviews.csv'}",
                "recipe.fetch.text_column=review", "recipe.fetch.label_column=sentiment", *extra]
    return make


def _string_target(d: Path) -> None:
    """Rewrite data/raw/documents.jsonl as another source could have written it (the .ts parser refuses such a
    target), as tests/test_prepare_examples.py does: example 'walk/train/4' gets the target 'abc'."""
    raw = d / "data" / "raw" / "documents.jsonl"
    rows = [json.loads(line) for line in raw.read_text().splitlines()]
    rows[4]["target"] = "abc"
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))


# (the earlier good run's input, the bad run's input: overrides to fetch, or None when it rewrote the good run's
# raw/documents.jsonl instead, expected message); both runs share the paths: the bad one must keep the good one's.
PREPARE_CASES = {
    "ts-missing-values": (_frames_file(), _frames_file("?"),
                          "example 'walk/train/3': step 3, feature 0 is nan: frames must be finite numbers (fill or "
                          "drop missing values before training); fix the data (nothing was written)"),
    "ts-infinite-value": (_frames_file(), _frames_file("inf"), "example 'walk/train/3': step 3, feature 0 is inf: "
                          "frames must be finite numbers"),
    "frames-on-text": (_reviews(), _reviews("prepare.inputs=frames"),
                       "rows have no 'frames' (first: reviews.csv:1), but prepare.inputs=frames reads frames: recipe "
                       "'text_csv' gives rows with label, source, text; set prepare.inputs=tokens"),
    "tokens-on-frames": (_frames_file(), _frames_file(extra=("prepare.inputs=tokens",)),
                         "rows have no 'text' (first: walk/train/0), but prepare.inputs=tokens reads text: recipe "
                         "'ts_file' gives rows with frames, label; set prepare.inputs=frames"),
    "regress-target-not-a-number": (_frames_file(target=True, extra=("task=regress",)), _string_target,
                                    "example 'walk/train/4': target 'abc' is not a finite number; a regression "
                                    "target must be a number: fix the data"),
}


def _files(*dirs: Path) -> dict[str, bytes]:
    return {str(f): f.read_bytes() for d in dirs for f in sorted(d.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("case", PREPARE_CASES)
def test_prepare_cases(case, tmp_path):
    """prepare refuses naming the example (or the fix), and the prepared data of an earlier good run is kept."""
    (tmp_path / "corpus").mkdir()
    good, bad, message = PREPARE_CASES[case]
    paths = [f"paths.{k}={tmp_path / 'data' / k}" for k in ("raw", "prepared")] + [f"paths.reports={tmp_path}/reports"]
    cfg = compose([*good(tmp_path), *paths], config_dir=CONF)
    fetch.run(cfg)
    prepare.run(cfg)
    kept = _files(tmp_path / "data" / "prepared", tmp_path / "reports")
    assert str(tmp_path / "data" / "prepared" / "meta.json") in kept
    overrides = bad(tmp_path)
    if overrides is not None:  # else `bad` rewrote raw/documents.jsonl itself
        cfg = compose([*overrides, *paths], config_dir=CONF)
        fetch.run(cfg)
    with pytest.raises(SeqpipeError, match=re.escape(message)):
        prepare.run(cfg)
    assert _files(tmp_path / "data" / "prepared", tmp_path / "reports") == kept  # byte-identical, data.json too
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["prepared", "raw"]  # no temporary left


def _as_nobody(func):  # noqa: ANN001, ANN202
    """Run `func` in a forked child that is not root (root reads every file); return how it ended, as text.
    Everything the child needs must be imported before: it may not read the interpreter's own files."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)  # nobody
            func()
            outcome = "no error"
        except BaseException as e:  # noqa: BLE001
            outcome = f"{type(e).__name__}: {e}"
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    return os.read(read, 65536).decode()


# which path loses its permissions, which path the message names, the recipe (text files, or a CSV/GenBank file)
PERMISSION_CASES = {"unreadable-file": ("corpus/locked.txt", "corpus/locked.txt", "text_file"),
                    "unlistable-directory": ("corpus", "corpus", "text_file"),
                    "untraversable-parent": (".", "corpus", "text_file"),
                    "csv-in-untraversable-directory": ("corpus", "corpus/locked.txt", "text_csv"),
                    "unreadable-genbank": ("corpus/locked.txt", "corpus/locked.txt", "dna")}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to drop privileges in a child")
@pytest.mark.parametrize("case", PERMISSION_CASES)
def test_permission_cases(case):
    import seqpipe.recipes.dna
    import seqpipe.recipes.text_csv
    import seqpipe.recipes.text_file  # noqa: F401  (before the fork: see _as_nobody)

    locked, named, recipe = PERMISSION_CASES[case]
    d = Path(tempfile.mkdtemp())  # in /tmp, open to all: pytest's own temporary directories are private to root
    try:
        d.chmod(0o755)
        (d / "corpus").mkdir(mode=0o755)
        (d / "corpus" / "locked.txt").write_text("to be or not to be")
        (d / locked).chmod(0)
        where = f"paths=[{d / 'corpus'}]" if recipe == "text_file" else f"path={d / 'corpus' / 'locked.txt'}"
        cfg = compose([f"recipe={recipe}", f"recipe.fetch.{where}", f"paths.raw={d / 'raw'}"],
                      config_dir=CONF)
        outcome = _as_nobody(lambda: fetch.run(cfg))
        assert not (d / "raw").exists()
    finally:
        for path in (d, d / "corpus", d / "corpus" / "locked.txt"):
            path.chmod(0o755)
        shutil.rmtree(d)
    assert outcome == (f"SeqpipeError: {d / named}: cannot be read (Permission denied); check the path and its "
                       "permissions"), outcome


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to drop privileges in a child")
def test_unwritable_working_directory(monkeypatch, capfd):
    monkeypatch.setenv("SEQPIPE_CONF_DIR", str(CONF))
    d = Path(tempfile.mkdtemp())
    try:
        d.chmod(0o555)  # nobody may write here (run as root, the child is nobody)
        monkeypatch.chdir(d)
        outcome = _as_nobody(lambda: sys.exit(cli.main(["compose"])))
        assert list(d.iterdir()) == []  # no temporary left behind
    finally:
        d.chmod(0o755)
        shutil.rmtree(d)
    assert outcome == "SystemExit: 2", outcome
    assert ("seqpipe: error: params.yaml: Permission denied (cannot write here); check the path and its "
            "permissions") in capfd.readouterr().err


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


def test_sha256_mismatch_removes_the_download(tmp_path):
    f = tmp_path / "x.tar.gz"
    f.write_bytes(b"tampered")
    with pytest.raises(SeqpipeError, match="sha256 mismatch"):
        verify_sha256(f, hashlib.sha256(b"original").hexdigest())
    assert not f.exists()


@pytest.mark.parametrize("case", ["checkpoint-missing", "checkpoint-corrupt"])
def test_checkpoint_cases(case, tmp_path):
    (tmp_path / "reports").mkdir()
    write_corpus(tmp_path / "corpus")
    cfg = _cfg(tmp_path)
    fetch.run(cfg)
    prepare.run(cfg)
    ckpt = tmp_path / "models" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    (tmp_path / "reports" / "train.json").write_text(json.dumps(
        {"best_checkpoint": str(ckpt), "run_id": "x", "best_val_loss": 1.0, "epochs": 1, "steps": 1}))
    if case == "checkpoint-corrupt":
        ckpt.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(SeqpipeError, match="not found" if case == "checkpoint-missing" else
                       "cannot be loaded.*left as it is"):
        evaluate.run(cfg)
    assert not (tmp_path / "reports" / "metrics.json").exists()
    assert case == "checkpoint-missing" or ckpt.read_bytes().startswith(b"PK")


def _ragged(d: Path) -> str:
    (d / "ragged.csv").write_text("text\nA moving film, and funny.\nDull.\n")  # the comma is not quoted
    return str(d / "ragged.csv")


def _latin1(d: Path) -> str:
    (d / "latin1.csv").write_bytes(b"text\ncaf\xe9\n")
    return str(d / "latin1.csv")


# (case id, command line after the tracking URI; a callable makes an input file in tmp_path, expected message)
REGISTRY_CASES = [
    ("no-such-model", ["generate", "--model", "models:/nope@champion"], "no registered model named 'nope'"),
    ("no-such-alias", ["generate", "--model", "models:/seqpipe-text_file@gold"], "has no alias @gold"),
    ("no-such-version", ["generate", "--model", "models:/seqpipe-text_file/9"], "has no version 9; versions: 1"),
    ("predict-with-lm", ["predict", "--model", LM, "--text", "x"], "is a 'lm' model"),
    ("generate-with-classifier", ["generate", "--model", CLF], "is a 'classify' model"),
    ("predict-no-input", ["predict", "--model", CLF], "give one of --text TEXT, --audio CLIP or --input FILE"),
    ("predict-missing-file", ["predict", "--model", CLF, "--input", lambda d: str(d / "none.csv")],
     "input file not found"),
    ("predict-latin1-file", ["predict", "--model", CLF, "--input", _latin1], "not valid UTF-8 at byte offset"),
    ("predict-unquoted-separator", ["predict", "--model", CLF, "--input", _ragged],
     "its data rows have more fields than its header (1): a text holding a comma must be quoted"),
    ("model-uri-without-version", ["generate", "--model", "models:/seqpipe-text_file"],
     "names no version: use models:/seqpipe-text_file@champion (an alias) or models:/seqpipe-text_file/1"),
    ("path-not-a-model", ["generate", "--model", lambda d: str(d)], "is not an MLflow model (it has no MLmodel file)"),
    ("over-the-token-limit", ["generate", "--model", LM, "--max-new-tokens", "10000000", "--temperature", "0"],
     "max_new_tokens=10000000 must be between 0 and 1000, this model's limit (serve.max_new_tokens"),
    ("predict-row-over-limit", ["predict", "--model", CLF, "--text", "good " * 10_001],
     "row 0: 10001 tokens; this model takes at most 10000 per row (serve.max_input_tokens)"),
]


@pytest.mark.parametrize("case,argv,message", REGISTRY_CASES, ids=[c[0] for c in REGISTRY_CASES])
def test_registry_and_prediction_cases(case, argv, message, models, tmp_path, capsys):
    root, uri = models
    before = (root / "mlflow.db").read_bytes()
    argv = [a(tmp_path) if callable(a) else a for a in argv]
    code, text = run_cli([*argv, "--tracking-uri", uri], capsys)
    assert code == 2 and message in text, text
    assert (root / "mlflow.db").read_bytes() == before  # the registry is untouched


def _ask(model: str, column: str, text: str, **params):  # noqa: ANN202
    import mlflow

    return mlflow.pyfunc.load_model(model).predict(pd.DataFrame({column: [text]}), params=params or None)


# (case id, model, input text, generation params, the warning or error expected, check of the answer)
ANSWER_CASES = [
    ("unknown-prompt-chars", LM, "€€€", {"max_new_tokens": 3}, (UserWarning, "not in the vocabulary"),
     lambda out: out["text"][0].startswith("€€€")),
    ("empty-prompt", LM, "", {"max_new_tokens": 5}, None, lambda out: len(out["text"][0]) <= 5),
    ("over-long-text", CLF, "good " * 100, {}, (UserWarning, "read as its first 12"),
     lambda out: out["label"][0] in ("neg", "pos")),
    ("unknown-words-only", CLF, "qqq zzz", {}, (UserWarning, "every token is unknown"),
     lambda out: out["unk_fraction"][0] == 1.0),
    ("empty-text", CLF, "   ", {}, (ValueError, "row 0: empty input text"), None),
]


@pytest.mark.parametrize("case,model,text,params,expect,check", ANSWER_CASES, ids=[c[0] for c in ANSWER_CASES])
def test_prediction_inputs(case, model, text, params, expect, check, models):
    from seqpipe.tracking.store import use_tracking_uri

    use_tracking_uri(models[1])
    column = "prompt" if model == LM else "text"
    if expect is None:
        out = _ask(model, column, text, **params)
    elif issubclass(expect[0], Warning):
        with pytest.warns(expect[0], match=expect[1]):
            out = _ask(model, column, text, **params)
    else:
        with pytest.raises(expect[0], match=expect[1]):
            _ask(model, column, text, **params)
        return
    assert check(out)


GOOD_FRAMES = [[0.5, -0.5]] * 12  # one good request row: 12 steps of the model's 2 features

# (case id, a bad `frames` row, the reason given); the row is sent second, after a good row.
FRAME_REQUEST_CASES = [
    ("wrong-feature-count", [[0.1, 0.2, 0.3]] * 12, "3 features per step; this model expects 2"),
    ("ragged-row", [[0.1, 0.2], [0.3]], "ragged frames: step 0 has 2 features but step 1 has 1; every step needs "
     "the same number"),
    ("string-in-frames", [[0.1, 0.2], ["abc", 0.3]], "step 1, feature 0: 'abc' is not a number"),
    ("empty-series", [], "the series has no steps (length 0): send at least one frame"),
    ("infinite-value", [[0.1, math.inf]], "step 0, feature 1 is inf: frames must be finite numbers"),
    ("nan-value", [[math.nan, 0.1]], "step 0, feature 0 is nan: frames must be finite numbers"),  # NaN, not None
    ("one-feature-row", [0.1, 0.2], "1 feature per step; this model expects 2"),
]


@pytest.mark.parametrize("case,row,reason", FRAME_REQUEST_CASES, ids=[c[0] for c in FRAME_REQUEST_CASES])
def test_frames_request_cases(case, row, reason, frames_model, tmp_path, capsys):
    """A bad frames row: `seqpipe predict --input rows.jsonl` exits 2 naming the file's data row and writes no
    output; the served model (pyfunc) refuses it with InputError, which MLflow's server answers with HTTP 400."""
    from seqpipe.data.requests import InputError

    root, uri, model = frames_model
    before = (root / "mlflow.db").read_bytes()
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"frames": r}) + "\n" for r in (GOOD_FRAMES, row)))  # inf: Infinity
    output = tmp_path / "out.csv"
    code, text = run_cli(["predict", "--model", FRAMES, "--input", str(rows), "--output", str(output),
                          "--tracking-uri", uri], capsys)
    assert code == 2 and f"seqpipe: error: {rows}, data row 2: {reason}" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]  # no output file, no temporary
    assert (root / "mlflow.db").read_bytes() == before
    with pytest.raises(InputError) as refused:
        model.predict(pd.DataFrame({"frames": [GOOD_FRAMES, row]}))
    assert refused.value.get_http_status_code() == 400 and refused.value.row == 1
    assert refused.value.message.startswith(f"seqpipe: row 1: {reason}"), refused.value.message
    assert set(model.predict(pd.DataFrame({"frames": [GOOD_FRAMES]}))["label"]) <= {"a", "b"}  # the good row alone


def _frames_csv(d: Path) -> str:
    (d / "rows.csv").write_text('frames\n"[[0.5, -0.5]]"\n')
    return str(d / "rows.csv")


# (case id, command line after the tracking URI; a callable makes an input file in tmp_path, expected message)
FRAMES_CLI_CASES = [
    ("text-to-frames-model", ["predict", "--model", FRAMES, "--text", "hello"],
     "this model reads frames, not text: give --input FILE.jsonl with a 'frames' column"),
    ("csv-to-frames-model", ["predict", "--model", FRAMES, "--input", _frames_csv],
     "this model reads frames (a T x F list of lists per row), which a CSV cannot hold; give a JSONL file"),
]


@pytest.mark.parametrize("case,argv,message", FRAMES_CLI_CASES, ids=[c[0] for c in FRAMES_CLI_CASES])
def test_frames_model_cases(case, argv, message, frames_model, tmp_path, capsys):
    root, uri, _ = frames_model
    before = (root / "mlflow.db").read_bytes()
    argv = [a(tmp_path) if callable(a) else a for a in argv]
    inputs = sorted(tmp_path.iterdir())
    code, text = run_cli([*argv, "--tracking-uri", uri], capsys)
    assert code == 2 and message in text, text
    assert sorted(tmp_path.iterdir()) == inputs  # no output file
    assert (root / "mlflow.db").read_bytes() == before


def test_tracking_server_down_fails_fast(models, capsys):
    """`seqpipe generate` against a port where nothing listens: one line, within seconds (not MLflow's minutes of
    retries, nor a 'no such model' after them)."""
    from conftest import free_port

    start = time.monotonic()
    code, text = run_cli(["generate", "--model", LM, "--tracking-uri", f"http://127.0.0.1:{free_port()}"], capsys)
    elapsed = time.monotonic() - start
    assert code == 2 and "does not answer (connection refused; 3 tries" in text and "nothing was changed" in text
    assert elapsed < 15, elapsed
    assert len(text.strip().splitlines()) == 1, text


def test_damaged_store_is_refused(models, tmp_path, capsys):
    root, _ = models
    damaged = tmp_path / "mlflow.db"
    data = (root / "mlflow.db").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk or an interrupted copy
    before = damaged.read_bytes()
    code, text = run_cli(["generate", "--model", LM, "--tracking-uri", f"sqlite:///{damaged}"], capsys)
    assert code == 2 and f"{damaged} is not a readable MLflow store" in text and "Restore it from a backup" in text
    assert damaged.read_bytes() == before
    (tmp_path / "other.db").write_bytes(b"")  # an empty file: not a store either, but MLflow would make it one
    import sqlite3

    with sqlite3.connect(tmp_path / "notes.db") as con:
        con.execute("CREATE TABLE notes (t TEXT)")
    code, text = run_cli(["generate", "--model", LM, "--tracking-uri", f"sqlite:///{tmp_path / 'notes.db'}"], capsys)
    assert code == 2 and "is an SQLite database but not an MLflow store" in text
    code, text = run_cli(["generate", "--model", LM, "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"], capsys)
    assert code == 2 and "no MLflow store at" in text and not (tmp_path / "none.db").exists()


def test_training_against_a_damaged_store_keeps_the_checkpoints(tiny_lm, tmp_path):
    """A stage that needs the store checks it before it removes anything (here: the checkpoints of another config
    that train would clear)."""
    from seqpipe import train

    root = clone(tiny_lm["root"], tmp_path / "project")  # trained, its checkpoints in models/checkpoints
    checkpoints = {p.name: p.read_bytes() for p in (root / "models" / "checkpoints").iterdir()}
    assert checkpoints
    db = root / "mlflow.db"
    db.write_bytes(db.read_bytes()[:4096])
    with working_dir(root), pytest.raises(SeqpipeError, match="is not a readable MLflow store"):
        train.run(compose([*here_overrides(root), "trainer.max_epochs=3"], config_dir=CONF))  # another config:
        # it would clear the checkpoints
    assert {p.name: p.read_bytes() for p in (root / "models" / "checkpoints").iterdir()} == checkpoints


def test_a_store_without_the_trained_run_is_refused(models, tmp_path):
    """reports/train.json names a run that the configured store does not hold (trained against another store)."""
    import mlflow

    root, _ = models
    empty = tmp_path / "empty.db"
    mlflow.MlflowClient(f"sqlite:///{empty}").search_experiments()  # an MLflow store with no runs
    cfg = compose([*here_overrides(root), f"mlflow.tracking_uri=sqlite:///{empty}"], config_dir=CONF)
    metrics = (root / "reports" / "metrics.json").read_bytes()
    with working_dir(root):  # where it was trained: train.json names the checkpoint relative to it
        with pytest.raises(SeqpipeError, match=r"train\.json names MLflow run \w+, which the store .*empty\.db does "
                                               r"not hold.*Point MLFLOW_TRACKING_URI at that store"):
            evaluate.run(cfg)
        from seqpipe import register

        with pytest.raises(SeqpipeError, match="which the store"):
            register.run(cfg)
    assert (root / "reports" / "metrics.json").read_bytes() == metrics


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_during_generate_keeps_the_text(models, tmp_path):
    """Ctrl-C while `seqpipe generate` prints: the text so far stays on the screen, one line says what happened,
    exit 130."""
    _, uri = models
    # The child slows each step of the network to 20 ms and never lets it choose <eos> (about 1 draw in 40 ends
    # within the first characters on this model, before the interrupt), and it takes Ctrl-C as a terminal does
    # (a runner started in the background, `cmd &`, hands its children SIGINT ignored).
    code = ("import signal, sys, time; from seqpipe import cli; from seqpipe.models import nets\n"
            "from seqpipe.data.vocab import EOS_ID\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "forward = nets.RecurrentLM.forward\n"
            "def slow(self, *a, **k):\n    time.sleep(0.02); logits, state = forward(self, *a, **k)\n"
            "    logits[..., EOS_ID] = float('-inf'); return logits, state\n"
            "nets.RecurrentLM.forward = slow\n"
            f"sys.exit(cli.main(['generate', '--model', {LM!r}, '--prompt', 'KING:', '--max-new-tokens', '1000', "
            f"'--tracking-uri', {uri!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.read(12)  # the prompt and a few tokens: generation is under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    text, err = (first + out).decode(), err.decode()
    assert proc.returncode == 130, f"{err}\nstdout: {text!r}"
    # the 12 bytes read, the text after them, and the newline the interrupt adds (generated newlines count too)
    assert text.startswith("KING:") and len(first + out) >= 12 and len(text) <= len("KING:") + 1000 + 1
    assert "seqpipe: interrupted after" in err and "the text so far is above" in err and "Traceback" not in err
