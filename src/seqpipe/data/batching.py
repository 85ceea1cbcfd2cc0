"""Length bucketing for variable-length sequences: a batch sampler, a padding collate (and its warped twin for the
train split under data.augment), and padding-waste figures."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Sampler

from seqpipe.data.frames import warp
from seqpipe.data.vocab import IGNORE_INDEX, PAD_ID


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar-length sequences, reshuffled every epoch; give it to a DataLoader as `batch_sampler`.

    Each epoch: permute the indices, cut the permutation into pools of `batch_size * bucket_factor`, sort each pool by
    length, cut it into batches, shuffle the order of all batches. Which samples meet still changes every epoch, yet
    a batch's sequences are of nearly one length, so little of it is padding. `shuffle=False` sorts all indices by
    length and keeps the batches in that order (for evaluation). Only the last batch can be incomplete;
    `drop_last` drops it.

    Under DDP pass `num_replicas` and `rank` (and, in Lightning, `use_distributed_sampler=False`): after shuffling,
    batch i goes to rank i % num_replicas. So that every rank runs the same number of steps, the batch list is
    padded, as DistributedSampler pads samples, by repeating batches from its start: a few samples are seen twice
    an epoch. With `drop_last` the left-over batches are dropped instead. Call `set_epoch` every epoch: Lightning only
    sets a DataLoader's `sampler`, so seqpipe's LightningModule calls it (on_train_epoch_start), as a plain training
    loop must.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                 bucket_factor: int = 200, drop_last: bool = False, num_replicas: int = 1, rank: int = 0):
        if batch_size < 1 or bucket_factor < 1:
            raise ValueError(f"batch_size ({batch_size}) and bucket_factor ({bucket_factor}) must be at least 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.bucket_factor, self.drop_last = bucket_factor, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The shuffle depends only on (seed, epoch), so every rank and every rerun draws the same batches."""
        self.epoch = epoch

    def _all_batches(self) -> list[np.ndarray]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            batches = [order[i:i + bs] for i in range(0, n, bs)]
            return batches[:-1] if self.drop_last and batches and len(batches[-1]) < bs else batches
        rng = np.random.default_rng((self.seed, self.epoch))
        perm, pool = rng.permutation(n), bs * self.bucket_factor
        batches = []
        # A pool is a whole number of batches, so only the very last batch can be short.
        for start in range(0, n, pool):
            chunk = perm[start:start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        return [batches[i] for i in rng.permutation(len(batches))]

    def _replica_batches(self) -> list[np.ndarray]:
        batches, r = self._all_batches(), self.num_replicas
        if self.drop_last:
            batches = batches[: len(batches) // r * r]
        elif batches and len(batches) % r:
            extra = r - len(batches) % r
            batches += (batches * math.ceil(extra / len(batches)))[:extra]
        return batches[self.rank::r]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._replica_batches():
            yield batch.tolist()

    def __len__(self) -> int:
        n, bs, r = len(self.lengths), self.batch_size, self.num_replicas
        if self.drop_last:
            return n // bs // r
        return math.ceil(math.ceil(n / bs) / r)


def _long_unless_float(a: object) -> Tensor:
    t = torch.as_tensor(a)
    return t if t.is_floating_point() else t.long()


def pad_collate(batch: Sequence[tuple[Tensor, Tensor | int]], pad_id: int = PAD_ID,
                ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Pad to the batch's longest sequence: token ids with `pad_id`, float frames with 0; per-step targets are padded
    with `ignore_index`, which the loss skips. Dtypes are kept (ids and labels long, frames and numbers float)."""
    ids = [_long_unless_float(x) for x, _ in batch]
    targets = [_long_unless_float(y) for _, y in batch]
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)  # (B,) on the CPU, as packing wants
    pad = 0.0 if ids[0].is_floating_point() else pad_id
    x = pad_sequence(ids, batch_first=True, padding_value=pad)  # (B, T_max) ids or (B, T_max, F) frames
    if targets[0].dim() == 0:
        y = torch.stack(targets)  # (B,) one label or number per sequence
    else:
        if any(len(t) != len(i) for t, i in zip(targets, ids)):
            raise ValueError("per-step targets must be as long as their sequence")
        y = pad_sequence(targets, batch_first=True, padding_value=ignore_index)  # (B, T_max)
    return {"x": x, "y": y, "lengths": lengths}


def warped_collate(batch: Sequence[tuple[Tensor, Tensor | int]], rng: np.random.Generator, speed: float = 0.0,
                   scale: float = 0.0) -> dict[str, Tensor]:
    """`pad_collate` after `warp` (seqpipe.data.frames) of each example's frames: the train split under data.augment."""
    return pad_collate([(warp(x, rng, speed, scale), y) for x, y in batch])


def padding_waste(lengths_per_batch: Iterable[Sequence[int]]) -> float:
    """Fraction of all padded (B, T_max) positions that are padding: 1 - sum(lengths) / sum(B * T_max)."""
    real = padded = 0
    for batch in lengths_per_batch:
        b = np.asarray(batch, dtype=np.int64)
        if b.size:
            real += int(b.sum())
            padded += b.size * int(b.max())
    return 1 - real / padded if padded else 0.0


def batches_waste(batches: Iterable[Sequence[int]], lengths: Sequence[int]) -> float:
    """Padding waste of one epoch of index batches: a BucketBatchSampler, `naive_batches`, or any batch sampler."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return padding_waste(lengths[np.asarray(b, dtype=np.int64)] for b in batches)


def naive_batches(n: int, batch_size: int, seed: int = 0, drop_last: bool = False) -> list[list[int]]:
    """The baseline: a seeded shuffle cut into batches, blind to length, as BatchSampler(RandomSampler) makes."""
    perm = np.random.default_rng(seed).permutation(n)
    stop = n // batch_size * batch_size if drop_last else n
    return [perm[i:i + batch_size].tolist() for i in range(0, stop, batch_size)]
