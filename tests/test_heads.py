"""Classifier and tagger heads: padding never changes a result; bidirectional pooling reads the right steps."""

import pytest
import torch
import torch.nn.functional as F

from seqpipe.data.batching import pad_collate
from seqpipe.models.nets import SequenceClassifier, SequenceTagger, reverse_padded

CELLS = ["rnn", "gru", "lstm"]


def _seqs(lengths, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (n,), generator=g) for n in lengths]


def test_reverse_padded_reverses_within_each_length():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    assert reverse_padded(x, torch.tensor([3, 2])).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_equals_each_sequence_alone(cell, pooling, packed):
    torch.manual_seed(0)
    net = SequenceClassifier(20, 3, pooling=pooling, cell=cell, embedding_dim=8, hidden_size=12, num_layers=2,
                             bidirectional=True, packed=packed).eval()
    seqs, labels = _seqs([9, 3, 6, 1]), torch.tensor([0, 2, 1, 1])
    batch = pad_collate(list(zip(seqs, labels)))
    logits, _ = net(batch["x"], batch["lengths"])
    alone = torch.cat([net(s.unsqueeze(0))[0] for s in seqs])
    torch.testing.assert_close(logits, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(F.cross_entropy(logits, labels), F.cross_entropy(alone, labels))


@pytest.mark.parametrize("cell", CELLS)
def test_tagger_loss_ignores_padding(cell):
    torch.manual_seed(0)
    net = SequenceTagger(20, 3, cell=cell, embedding_dim=8, hidden_size=12, num_layers=2, bidirectional=True).eval()
    seqs = _seqs([7, 2, 5])
    tags = [torch.randint(0, 3, (len(s),)) for s in seqs]
    batch = pad_collate(list(zip(seqs, tags)))
    logits, _ = net(batch["x"], batch["lengths"])  # (B, T, C)
    loss = F.cross_entropy(logits.reshape(-1, 3), batch["y"].reshape(-1), ignore_index=-100)
    per_seq = [net(s.unsqueeze(0))[0][0] for s in seqs]
    for b, out in enumerate(per_seq):
        torch.testing.assert_close(logits[b, : len(out)], out, rtol=1e-5, atol=1e-5)
    alone = F.cross_entropy(torch.cat(per_seq), torch.cat(tags))
    torch.testing.assert_close(loss, alone)


def test_bidirectional_last_pooling_reads_last_and_first_steps():
    """Forward half = forward RNN at the last valid step; backward half = backward RNN after reading the
    whole sequence reversed (i.e. at step 0)."""
    torch.manual_seed(0)
    net = SequenceClassifier(20, 2, pooling="last", cell="gru", embedding_dim=8, hidden_size=6,
                             bidirectional=True).eval()
    seqs = _seqs([5, 2])
    batch = pad_collate([(s, torch.tensor(0)) for s in seqs])
    out, _ = net.encoder(batch["x"], batch["lengths"])
    pooled = net.pool(out, batch["lengths"])
    for b, s in enumerate(seqs):
        emb = net.encoder.embedding(s).unsqueeze(0)
        fwd, _ = net.encoder.fwd[0](emb)
        bwd, _ = net.encoder.bwd[0](emb.flip(1))
        torch.testing.assert_close(pooled[b], torch.cat([fwd[0, -1], bwd[0, -1]]))


def test_unidirectional_classifier_overfits():
    torch.manual_seed(0)
    net = SequenceClassifier(20, 2, pooling="last", cell="lstm", embedding_dim=8, hidden_size=16)
    seqs, labels = _seqs([5, 8, 3, 6, 7, 4]), torch.tensor([0, 1, 0, 1, 1, 0])
    batch = pad_collate(list(zip(seqs, labels)))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        loss = F.cross_entropy(net(batch["x"], batch["lengths"])[0], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
