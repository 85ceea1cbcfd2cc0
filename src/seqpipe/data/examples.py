"""Independent examples (classification, tagging, regression): saved ragged arrays, datasets and the DataModule.
Inputs are token ids (T_i,) or float frames (T_i, F); targets a label, a number, or one label per step."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from seqpipe.data.batching import BucketBatchSampler, pad_collate
from seqpipe.data.inputs import kind_of
from seqpipe.data.meta import read_meta
from seqpipe.data.vocab import IGNORE_INDEX as IGNORE
from seqpipe.data.vocab import PAD_ID
from seqpipe.errors import SeqpipeError


def save_examples(path: Path, inputs: list[np.ndarray], targets: list[np.ndarray] | np.ndarray, sources: np.ndarray,
                  dtype: np.dtype) -> None:
    """Ragged sequences as one flat array (steps along axis 0) plus offsets; targets are one value per sequence
    (a label or a number) or, as a list, a sequence each (one label per step, or an output of its own length)."""
    flat = np.concatenate(inputs).astype(dtype) if inputs else np.zeros(0, dtype)
    per_step = not isinstance(targets, np.ndarray)
    tgt = np.concatenate(targets) if per_step else targets
    # labels and tags fit int16; target token ids (sequence to sequence) may not
    tgt = tgt.astype(np.float32) if tgt.dtype.kind == "f" else tgt.astype(np.int16 if tgt.max(initial=0) < 2**15
                                                                        else np.int32)
    extra = {"target_offsets": _offsets(targets)} if per_step else {}
    with open(path, "wb") as f:
        np.savez(f, x=flat, offsets=_offsets(inputs), targets=tgt, per_step=np.array(per_step), sources=sources,
                 **extra)


def _offsets(arrays: list[np.ndarray]) -> np.ndarray:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    return offsets


class ExampleDataset(Dataset):
    """Item i: (inputs: ids (T_i,) or frames (T_i, F), target: a label (), a number (), tags (T_i,) or an output
    sequence (U_i,))."""

    def __init__(self, path: Path):
        with np.load(path) as z:
            self.x, self.offsets, self.targets = z["x"], z["offsets"], z["targets"]
            self.per_step, self.sources = bool(z["per_step"]), z["sources"]
            # data prepared before outputs had their own lengths: tags are as long as their inputs
            self.target_offsets = z["target_offsets"] if "target_offsets" in z else self.offsets
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        a, b = self.offsets[i], self.offsets[i + 1]
        x = self.x[a:b]
        x = torch.from_numpy(x.astype(np.float32) if x.dtype.kind == "f" else x.astype(np.int64))
        target = self.targets[self.target_offsets[i]:self.target_offsets[i + 1]] if self.per_step \
            else self.targets[i]
        kind = np.float32 if self.targets.dtype.kind == "f" else np.int64
        return x, torch.as_tensor(np.asarray(target, dtype=kind))


class ExampleDataModule(L.LightningDataModule):
    """Batches padded to their longest sequence; with `bucketing`, batches of similar lengths."""

    def __init__(self, prepared_dir: str, batch_size: int = 64, eval_batch_size: int = 128, bucketing: bool = True,
                 num_workers: int = 0, seed: int = 0, bucket_factor: int = 200, collate: Callable | None = None,
                 train_collate: Callable | None = None):
        super().__init__()
        # pads a batch: inputs and their targets (labels, tags) by default; a task may bring its own, and one for
        # the train split only (augmentation)
        self.collate = collate or partial(pad_collate, pad_id=PAD_ID, ignore_index=IGNORE)
        self.train_collate = train_collate or self.collate
        self.dir = Path(prepared_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.bucketing, self.num_workers, self.seed, self.bucket_factor = bucketing, num_workers, seed, bucket_factor
        self.meta = read_meta(self.dir)
        kind = kind_of(self.meta["inputs"])
        self.vocab, _ = kind.load(kind.artifacts(self.dir))  # the input vocabulary (None for frames)
        self.labels, self.source_names = self.meta["target"].get("labels", []), self.meta.get("sources", [""])
        self.splits: dict[str, ExampleDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self.splits:
                self.splits[split] = ExampleDataset(self.dir / f"{split}.npz")
        if len(self.splits["train"]) == 0:
            raise SeqpipeError(f"{self.dir / 'train.npz'} holds no examples: add data")

    def _batches(self, split: str, train: bool) -> BatchSampler | BucketBatchSampler:
        ds, size = self.splits[split], self.batch_size if train else self.eval_batch_size
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if self.bucketing:
            return BucketBatchSampler(ds.lengths.tolist(), size, shuffle=train, seed=self.seed,
                                      bucket_factor=self.bucket_factor, num_replicas=world, rank=rank)
        if world > 1:
            # Lightning's own distributed sampler is off (use_distributed_sampler=false), so the ranks are dealt their
            # examples here. Lightning calls set_epoch on a batch sampler's `sampler`, so this reshuffles every epoch;
            # BucketBatchSampler(bucket_factor=1) would deal plain random batches too, but Lightning 2.6 never calls
            # a batch sampler's own set_epoch.
            sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=train, seed=self.seed)
        else:
            sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(self.seed)) if train \
                else SequentialSampler(ds)
        return BatchSampler(sampler, size, drop_last=False)

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        return DataLoader(self.splits[split], batch_sampler=self._batches(split, train), num_workers=self.num_workers,
                          collate_fn=self.train_collate if train else self.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
