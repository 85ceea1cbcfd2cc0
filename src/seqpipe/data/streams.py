"""Token streams for language modelling: documents encoded into one stream of ids per split (prepare), then (B, N)
parallel streams read in consecutive BPTT chunks (the data module)."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import lightning.pytorch as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from seqpipe.data.documents import Document
from seqpipe.data.splits import SPLITS
from seqpipe.data.vocab import BOS, BOS_ID, EOS, EOS_ID, SPECIALS, UNK_ID, Vocab, prepared_vocab
from seqpipe.errors import SeqpipeError

if TYPE_CHECKING:
    from omegaconf import DictConfig



def encode_splits(splits: dict[str, list[Document]], tokenizer, p: DictConfig) -> tuple[Vocab, dict]:  # noqa: ANN001
    """The vocabulary of the training split (val/test tokens it lacks count as <unk>), and each split as one
    stream of ids: <bos> document <eos> <bos> document <eos> ..."""
    if hasattr(tokenizer, "codepoints"):
        return encode_chars(splits, tokenizer, p)
    tokens = {name: [[BOS, *tokenizer.tokenize(d["text"]), EOS] for d in _progress(splits[name], name)]
              for name in SPLITS}
    counts = Counter(t for doc in tokens["train"] for t in doc)
    vocab = Vocab.build(counts, p.min_freq, p.max_size, tokenizer=dict(p.tokenizer))
    return vocab, {name: np.fromiter((i for doc in tokens[name] for i in vocab.encode(doc)), dtype=vocab.dtype())
                   for name in SPLITS}


def encode_chars(splits: dict[str, list[Document]], tokenizer, p: DictConfig) -> tuple[Vocab, dict]:  # noqa: ANN001
    """`encode_splits` for character tokenizers, on arrays of code points: the same vocabulary and ids as the
    token-by-token path (tested), without a Python object per character."""
    points = {name: [tokenizer.codepoints(d["text"]) for d in _progress(splits[name], name)] for name in SPLITS}
    streams = {name: np.concatenate([np.zeros(0, "<u4"), *docs]) for name, docs in points.items()}
    counts = np.bincount(streams["train"])
    chars = np.flatnonzero(counts)
    vocab = Vocab.build(Counter(dict(zip(map(chr, chars.tolist()), counts[chars].tolist()))), p.min_freq,
                        p.max_size, tokenizer=dict(p.tokenizer))
    # code point -> id, through a table as long as the largest code point seen (at most 0x10FFFF entries)
    lut = np.full(max((int(s.max()) for s in streams.values() if s.size), default=0) + 1, UNK_ID, vocab.dtype())
    for token in vocab.itos[len(SPECIALS):]:
        lut[ord(token)] = vocab.stoi[token]
    for name, docs in points.items():
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        ends = np.cumsum(lengths)
        # <bos> before and <eos> after each document: offsets interleaved (start0, end0, start1, ...) so that
        # an <eos> comes before the next <bos> at the same offset (np.insert keeps the order of equal offsets).
        at = np.stack([ends - lengths, ends], axis=1).ravel()
        streams[name] = np.insert(lut[streams[name]], at, np.tile([BOS_ID, EOS_ID], len(docs))).astype(vocab.dtype())
    return vocab, streams


def _progress(docs: list[Document], name: str):  # noqa: ANN202
    return tqdm(docs, desc=f"tokenize {name}", unit="doc", file=sys.stderr)


def batchify(ids: np.ndarray, n_streams: int) -> Tensor:
    """Cut one stream into `n_streams` equal contiguous rows (B, N); the few tokens left over are dropped."""
    n = len(ids) // n_streams
    return torch.from_numpy(ids[: n * n_streams].astype(np.int64)).view(n_streams, n)


class ChunkDataset(Dataset):
    """Item i is the (x, y) chunk i of every stream; chunk i + 1 continues where chunk i ends,
    so a model can carry its hidden state from one item to the next (stateful truncated BPTT)."""

    def __init__(self, streams: Tensor, bptt: int):
        self.streams, self.bptt = streams, bptt

    def __len__(self) -> int:
        return math.ceil((self.streams.size(1) - 1) / self.bptt)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        start = i * self.bptt
        end = min(start + self.bptt, self.streams.size(1) - 1)
        return {"x": self.streams[:, start:end], "y": self.streams[:, start + 1:end + 1]}  # (B, T), (B, T)


class StreamDataModule(L.LightningDataModule):
    """Reads prepare's arrays. Under DDP every rank takes its own slice of the streams."""

    def __init__(self, prepared_dir: str, batch_size: int = 64, bptt: int = 128, eval_batch_size: int = 16,
                 num_workers: int = 0):
        super().__init__()
        self.dir = Path(prepared_dir)
        self.batch_size, self.bptt = batch_size, bptt
        self.eval_batch_size, self.num_workers = eval_batch_size, num_workers
        self.vocab = self._load_vocab()
        self.splits: dict[str, ChunkDataset] = {}

    def _load_vocab(self) -> Vocab:
        return Vocab.load(prepared_vocab(self.dir))

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _streams(self, split: str, n_streams: int, strict: bool) -> Tensor:
        path = self.dir / f"{split}.npy"
        ids = np.load(path)
        rank, world = self._rank()
        need = n_streams * world * (self.bptt + 1)
        if len(ids) < need:
            if strict:
                raise SeqpipeError(
                    f"{path} has {len(ids):,} tokens, fewer than one training chunk needs "
                    f"(data.batch_size x (data.bptt + 1) = {need:,}): add text, or lower data.batch_size "
                    "or data.bptt"
                )
            # Small evaluation splits: fewer, longer streams rather than an error.
            n_streams = max(1, min(n_streams, len(ids) // (world * (self.bptt + 1))))
        if len(ids) < 2 * world * n_streams:
            raise SeqpipeError(f"{path} has only {len(ids)} tokens: too few to evaluate on; add text")
        streams = batchify(ids, n_streams * world)
        return streams[rank * n_streams:(rank + 1) * n_streams]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.splits["train"] = ChunkDataset(self._streams("train", self.batch_size, True), self.bptt)
        if stage in (None, "fit", "validate"):
            self.splits["val"] = ChunkDataset(self._streams("val", self.eval_batch_size, False), self.bptt)
        if stage in (None, "test"):
            self.splits["test"] = ChunkDataset(self._streams("test", self.eval_batch_size, False), self.bptt)

    def _loader(self, split: str) -> DataLoader:
        # batch_size=None: each item already is a batch; shuffle=False keeps chunks in stream order.
        return DataLoader(self.splits[split], batch_size=None, shuffle=False, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
