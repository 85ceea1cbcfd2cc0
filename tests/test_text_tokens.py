"""seqpipe.data.text_tokens was seqpipe/tokenize.py, which shadowed the standard library's tokenize: no module of the
package has a standard library name, and the old name still loads what was saved under it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import ROOT
from hydra.utils import instantiate

from seqpipe.data import text_tokens
from seqpipe.data.vocab import Vocab
from seqpipe.tracking.runs import data_digest

PACKAGE = ROOT / "src" / "seqpipe"
OLD_MODELS = Path(__file__).parent / "data" / "models-0.1"


def test_no_module_of_the_package_has_a_standard_library_name():
    names = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    assert sorted(names & set(sys.stdlib_module_names)) == []


def test_a_script_run_from_inside_the_package_gets_the_standard_tokenize():
    done = subprocess.run([sys.executable, "-c", "import tokenize; print(tokenize.__file__)"], cwd=PACKAGE,
                          capture_output=True, text=True, check=True)
    assert not done.stdout.strip().startswith(str(PACKAGE))


def test_the_old_name_resolves_to_the_new_module():
    from seqpipe.tokenize import CharTokenizer, load_tokenizer

    assert CharTokenizer is text_tokens.CharTokenizer and load_tokenizer is text_tokens.load_tokenizer
    old = instantiate({"_target_": "seqpipe.tokenize.WordTokenizer", "lowercase": False})
    assert isinstance(old, text_tokens.WordTokenizer) and old.tokenize("It's") == ["It", "'", "s"]


def test_a_vocabulary_saved_under_the_old_name_loads_its_tokenizer():
    vocab_file = OLD_MODELS / "lm" / "artifacts" / "vocab.json"
    assert json.loads(vocab_file.read_text())["tokenizer"]["_target_"] == "seqpipe.tokenize.CharTokenizer"
    tokenizer = text_tokens.load_tokenizer(Vocab.load(vocab_file).tokenizer)
    assert isinstance(tokenizer, text_tokens.CharTokenizer) and tokenizer.tokenize("ab") == ["a", "b"]


def test_a_model_registered_under_the_old_name_loads_and_generates():
    import mlflow

    model = mlflow.pyfunc.load_model(str(OLD_MODELS / "lm"))
    out = model.predict(pd.DataFrame({"prompt": ["KING:"]}), params={"max_new_tokens": 5, "seed": 1})
    assert out["text"][0].startswith("KING:") and len(out["text"][0]) == len("KING:") + 5


def test_data_prepared_before_and_after_the_rename_has_one_digest(tmp_path):
    vocab = {"tokens": ["<pad>", "a"], "tokenizer": {"_target_": "seqpipe.tokenize.CharTokenizer"}}
    (tmp_path / "train.npy").write_bytes(b"ids")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    before = data_digest(tmp_path)
    vocab["tokenizer"]["_target_"] = "seqpipe.data.text_tokens.CharTokenizer"
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    assert data_digest(tmp_path) == before
    vocab["tokenizer"]["_target_"] = "seqpipe.data.text_tokens.WordTokenizer"  # another tokenizer is other data
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    assert data_digest(tmp_path) != before
