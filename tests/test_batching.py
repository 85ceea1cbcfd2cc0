import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from seqpipe.data.batching import BucketBatchSampler, batches_waste, naive_batches, pad_collate, padding_waste


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    """Skewed like review lengths: lognormal, median 175, clipped to [10, 2500]."""
    return np.clip(np.random.default_rng(seed).lognormal(np.log(175), 0.75, n).round(), 10, 2500).astype(int)


def _flat(batches) -> list[int]:
    return [i for b in batches for i in b]


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_once_per_epoch(shuffle):
    lengths = _lengths(1003)  # 32 does not divide 1003; bucket_factor=4 makes several pools
    sampler = BucketBatchSampler(lengths, batch_size=32, shuffle=shuffle, bucket_factor=4)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(_flat(batches)) == list(range(1003))
        assert len(batches) == len(sampler) == 32
        assert sorted(len(b) for b in batches)[:2] == [11, 32]  # only one batch is short


def test_unshuffled_is_sorted_by_length():
    lengths = _lengths(500)
    flat = _flat(BucketBatchSampler(lengths, batch_size=16, shuffle=False))
    assert np.all(np.diff(lengths[flat]) >= 0)


@pytest.mark.parametrize("shuffle", [True, False])
def test_drop_last_drops_only_the_short_batch(shuffle):
    sampler = BucketBatchSampler(_lengths(1003), batch_size=32, shuffle=shuffle, bucket_factor=4, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 31
    assert all(len(b) == 32 for b in batches)
    assert len(set(_flat(batches))) == 31 * 32


def test_deterministic_per_seed_and_epoch():
    lengths = _lengths(2000)

    def epoch(seed: int, e: int) -> list[list[int]]:
        sampler = BucketBatchSampler(lengths, batch_size=16, seed=seed, bucket_factor=8)
        sampler.set_epoch(e)
        return list(sampler)

    assert epoch(0, 3) == epoch(0, 3)
    assert epoch(0, 0) != epoch(0, 1)
    assert epoch(0, 1) != epoch(1, 0)  # the seed and the epoch do not just add up


def test_bucketing_cuts_padding_waste():
    lengths = _lengths(5000)
    bucketed = batches_waste(BucketBatchSampler(lengths, batch_size=32), lengths)  # default pools: 200 batches
    naive = batches_waste(naive_batches(len(lengths), 32), lengths)
    shuffled = RandomSampler(range(len(lengths)), generator=torch.Generator().manual_seed(0))
    torch_naive = batches_waste(BatchSampler(shuffled, 32, drop_last=False), lengths)
    assert bucketed <= 0.05
    assert naive > 5 * bucketed and torch_naive > 5 * bucketed
    # The waste left is mostly each pool's longest batch, so bigger pools waste less.
    wastes = [batches_waste(BucketBatchSampler(lengths, 32, bucket_factor=f), lengths) for f in (10, 50, 200)]
    assert wastes[0] > wastes[1] > wastes[2]
    assert wastes[2] <= 0.05


def test_padding_waste_by_hand():
    assert padding_waste([[3, 1], [2, 2]]) == pytest.approx(1 - 8 / 10)
    assert padding_waste([]) == 0.0


@pytest.mark.parametrize("n, drop_last", [(990, False), (990, True), (1024, False)])
@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_share_the_epoch(n, drop_last, replicas):
    lengths = _lengths(n)
    samplers = [BucketBatchSampler(lengths, 32, bucket_factor=4, drop_last=drop_last, num_replicas=replicas, rank=r)
                for r in range(replicas)]
    for s in samplers:
        s.set_epoch(2)
    per_rank = [list(s) for s in samplers]
    assert {len(b) for b in per_rank} == {len(samplers[0])}
    flat = _flat(_flat(per_rank))
    if drop_last:
        assert len(flat) == len(set(flat))  # nothing repeated
    else:
        assert set(flat) == set(range(n))  # nothing dropped
        extra = len(samplers[0]) * replicas - -(-n // 32)  # batches repeated so the ranks come out even
        assert 0 <= extra < replicas and len(flat) - n <= extra * 32


def test_rank_out_of_range():
    with pytest.raises(ValueError, match="rank 2"):
        BucketBatchSampler([1, 2, 3], 2, num_replicas=2, rank=2)


@pytest.mark.parametrize("label", [lambda i: i, lambda i: torch.tensor(i)])
def test_pad_collate_one_label_per_sequence(label):
    batch = [(torch.tensor([5, 6, 7]), label(1)), (torch.tensor([8]), label(0))]
    out = pad_collate(batch, pad_id=0)
    assert torch.equal(out["x"], torch.tensor([[5, 6, 7], [8, 0, 0]]))
    assert torch.equal(out["y"], torch.tensor([1, 0]))
    assert torch.equal(out["lengths"], torch.tensor([3, 1]))
    assert out["x"].dtype == out["y"].dtype == out["lengths"].dtype == torch.long


def test_pad_collate_per_step_tags():
    batch = [(torch.tensor([5, 6]), torch.tensor([1, 2])), (torch.tensor([8, 9, 4, 4]), torch.tensor([3, 3, 1, 2]))]
    out = pad_collate(batch, pad_id=0, ignore_index=-100)
    assert out["x"].shape == out["y"].shape == (2, 4)  # the batch's longest, not a global maximum
    assert torch.equal(out["x"][0], torch.tensor([5, 6, 0, 0]))
    assert torch.equal(out["y"][0], torch.tensor([1, 2, -100, -100]))
    assert torch.equal(out["lengths"], torch.tensor([2, 4]))
    with pytest.raises(ValueError, match="as long as"):
        pad_collate([(torch.tensor([1, 2]), torch.tensor([1]))])


def test_dataloader_pads_each_batch_to_its_own_longest():
    lengths = _lengths(300) // 10
    data = [(torch.ones(n, dtype=torch.long), torch.tensor(0)) for n in lengths]
    loader = DataLoader(data, batch_sampler=BucketBatchSampler(lengths, 16, bucket_factor=4), collate_fn=pad_collate)
    for batch in loader:
        assert batch["x"].shape == (len(batch["lengths"]), batch["lengths"].max())
    assert len(loader) == 19
