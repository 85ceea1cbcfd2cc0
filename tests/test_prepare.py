import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from seqpipe import fetch, prepare
from seqpipe.data import streams
from seqpipe.data.splits import split_documents
from seqpipe.data.text_tokens import CharTokenizer
from seqpipe.data.vocab import BOS_ID, EOS_ID, Vocab
from seqpipe.errors import SeqpipeError


def test_document_split_has_no_overlap_and_loses_nothing():
    docs = [{"id": f"d{i}", "text": f"text {i}"} for i in range(20)]
    splits = split_documents(docs, 0.1, 0.2, seed=0)
    ids = {k: {d["id"] for d in v} for k, v in splits.items()}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] | ids["test"] == {d["id"] for d in docs}
    assert (len(ids["val"]), len(ids["test"])) == (2, 4)
    assert split_documents(docs, 0.1, 0.2, seed=0) == splits  # deterministic
    assert split_documents(docs, 0.1, 0.2, seed=1) != splits


def test_one_document_is_cut_into_contiguous_blocks():
    splits = split_documents([{"id": "a", "text": "x" * 80 + "y" * 10 + "z" * 10}], 0.1, 0.1, seed=0)
    assert [s[0]["text"] for s in splits.values()] == ["x" * 80, "y" * 10, "z" * 10]


def test_fetch_and_prepare_write_arrays_vocab_and_stats(tiny_cfg):
    fetch.run(tiny_cfg)
    stats = prepare.run(tiny_cfg)
    out = tiny_cfg.paths.prepared
    vocab = Vocab.load(f"{out}/vocab.json")
    train = np.load(f"{out}/train.npy")
    assert train.dtype == np.uint8 and train[0] == BOS_ID and train[-1] == EOS_ID
    assert stats["train_tokens"] == train.size and stats["vocab_size"] == len(vocab)
    assert stats["train_documents"] + stats["val_documents"] + stats["test_documents"] == 5
    assert json.loads(open(f"{tiny_cfg.paths.reports}/data.json").read()) == stats
    text = "".join(vocab.decode(train))
    assert "ROMEO:" in text or "JULIET:" in text


def test_empty_corpus_is_refused(tiny_cfg, tmp_path):
    for f in (tmp_path / "corpus").iterdir():
        f.write_text("   \n")
    with pytest.raises(SeqpipeError, match="no documents"):
        fetch.run(tiny_cfg)


def test_failed_prepare_keeps_the_previous_output_and_leaves_no_temporaries(tiny_cfg):
    fetch.run(tiny_cfg)
    prepare.run(tiny_cfg)
    prepared = Path(tiny_cfg.paths.prepared)
    before = {p.name: p.read_bytes() for p in prepared.iterdir()}
    # Two of three documents are empty, so some split holds nothing: the error comes mid-write.
    docs = [{"id": "a", "text": "hello world " * 50}, {"id": "b", "text": ""}, {"id": "c", "text": ""}]
    Path(tiny_cfg.paths.raw, "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    with pytest.raises(SeqpipeError, match="split is empty"):
        prepare.run(tiny_cfg)
    assert {p.name: p.read_bytes() for p in prepared.iterdir()} == before
    assert sorted(p.name for p in prepared.parent.iterdir()) == ["prepared", "raw"]


class TokensOnly:
    """A character tokenizer without `codepoints`: prepare takes its token-by-token path."""

    tokenize = staticmethod(list)


@pytest.mark.parametrize("min_freq,max_size", [(1, None), (3, None), (1, 12)])
def test_array_path_for_characters_matches_the_token_path(min_freq, max_size):
    rng = np.random.default_rng(0)
    alphabet = list("abcde fgh\nÉé") + ["😀", "\ud800", "中"]  # accents, astral plane, a lone surrogate

    def doc(n):
        return {"text": "".join(rng.choice(alphabet, n, p=np.r_[[0.09] * 10, [0.02] * 5]))}

    splits = {"train": [doc(300), doc(0), doc(50)], "val": [doc(40), doc(0)], "test": [{"text": "zzz ab"}]}
    p = OmegaConf.create({"min_freq": min_freq, "max_size": max_size,
                          "tokenizer": {"_target_": "seqpipe.data.text_tokens.CharTokenizer"}})
    fast_vocab, fast = streams.encode_splits(splits, CharTokenizer(), p)
    slow_vocab, slow = streams.encode_splits(splits, TokensOnly(), p)
    assert fast_vocab.itos == slow_vocab.itos
    for name in ("train", "val", "test"):
        assert fast[name].dtype == slow[name].dtype and fast[name].tolist() == slow[name].tolist(), name
    assert fast["train"].tolist().count(BOS_ID) == 3 and fast["test"][-1] == EOS_ID
