import numpy as np
import pytest
import torch

from seqpipe.data.streams import ChunkDataset, StreamDataModule, batchify
from seqpipe.data.vocab import Vocab
from seqpipe.errors import SeqpipeError


def test_chunks_continue_each_stream():
    ids = np.arange(1003, dtype=np.uint16)
    streams = batchify(ids, 4)  # (4, 250): row r is one contiguous stretch
    assert streams.shape == (4, 250)
    assert torch.equal(streams[1], torch.arange(250, 500))
    ds = ChunkDataset(streams, bptt=32)
    xs, ys = zip(*((ds[i]["x"], ds[i]["y"]) for i in range(len(ds))))
    assert torch.equal(torch.cat(xs, 1), streams[:, :-1])
    assert torch.equal(torch.cat(ys, 1), streams[:, 1:])  # y is x shifted by one


def _prepared(tmp_path, n_train):
    Vocab(["<pad>", "<unk>", "<bos>", "<eos>", "a"]).save(tmp_path / "vocab.json")
    for split, n in (("train", n_train), ("val", 50), ("test", 50)):
        np.save(tmp_path / f"{split}.npy", np.full(n, 4, dtype=np.uint8))
    return tmp_path


def test_too_little_data_names_the_file_and_the_fix(tmp_path):
    dm = StreamDataModule(str(_prepared(tmp_path, 100)), batch_size=8, bptt=32)
    with pytest.raises(SeqpipeError, match=r"train\.npy has 100 tokens.*data\.batch_size"):
        dm.setup("fit")


def test_small_eval_split_uses_fewer_streams(tmp_path):
    dm = StreamDataModule(str(_prepared(tmp_path, 10_000)), batch_size=8, bptt=16, eval_batch_size=16)
    dm.setup("fit")
    assert dm.splits["val"].streams.shape[0] == 50 // 17
    assert len(dm.train_dataloader()) == len(dm.splits["train"])


def test_missing_prepared_data(tmp_path):
    with pytest.raises(SeqpipeError, match="run the prepare stage"):
        StreamDataModule(str(tmp_path / "nope"))
