import json

import pytest
from conftest import CONF

from seqpipe import fetch, prepare
from seqpipe.config import compose
from seqpipe.data.examples import ExampleDataset
from seqpipe.data.splits import split_examples
from seqpipe.errors import SeqpipeError


def _cfg(tmp_path, *overrides):
    return compose(["recipe=text_csv", f"recipe.fetch.path={tmp_path / 'd.csv'}", f"paths.raw={tmp_path}/raw",
                    f"paths.prepared={tmp_path}/prepared", f"paths.reports={tmp_path}/reports",
                    "prepare.min_freq=1", *overrides], config_dir=CONF)


def test_truncation_dedupe_and_arrays(tmp_path):
    rows = ["text,label"] + [f"word{i} " * (i % 7 + 1) + ",a" for i in range(60)] + \
        ["same text here,b"] * 5 + ["long " * 50 + ",b"]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    cfg = _cfg(tmp_path, "prepare.max_len=10", "prepare.val_fraction=0.2", "prepare.test_fraction=0.2")
    fetch.run(cfg)
    stats = prepare.run(cfg)
    assert stats["dropped_duplicates"] == 4 and stats["truncated"] == 1 and stats["num_classes"] == 2
    assert stats["train_examples"] + stats["val_examples"] + stats["test_examples"] == 62
    train = ExampleDataset(tmp_path / "prepared" / "train.npz")
    assert train.lengths.max() <= 10 and not train.per_step
    ids, label = train[0]
    assert ids.dtype.is_floating_point is False and label.dim() == 0
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert meta["target"]["labels"] == ["a", "b"] and meta["task"] == "classify"
    assert meta["inputs"] == {"kind": "tokens", "vocab_size": stats["vocab_size"]}


def test_stratified_split_keeps_each_label_share():
    rows = [{"id": str(i), "text": "x", "label": "rare" if i < 20 else "common"} for i in range(200)]
    splits = split_examples(rows, 0.1, 0.1, seed=0, stratify=True)
    assert [sum(r["label"] == "rare" for r in splits[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert sorted(r["id"] for s in splits.values() for r in s) == sorted(r["id"] for r in rows)


def test_empty_text_error_by_config(tmp_path):
    cfg = _cfg(tmp_path, "prepare.empty=error")
    (tmp_path / "raw").mkdir()
    rows = [{"id": "1", "text": "fine", "label": "a"}, {"id": "2", "text": " ", "label": "b"}]
    (tmp_path / "raw" / "documents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SeqpipeError, match="example '2' has an empty text"):
        prepare.run(cfg)
    assert not (tmp_path / "prepared").exists()
