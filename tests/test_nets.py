import pytest
import torch
import torch.nn.functional as F

from seqpipe.models.nets import RecurrentLM, detach_state

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


@pytest.mark.parametrize("cell,nonlinearity", CELLS)
def test_chunks_with_carried_state_equal_one_pass(cell, nonlinearity):
    """Stateful TBPTT: the forward outputs and loss of chunked processing equal a single pass."""
    torch.manual_seed(0)
    net = RecurrentLM(20, cell, 8, 16, num_layers=2, nonlinearity=nonlinearity).eval()
    x = torch.randint(4, 20, (3, 41))
    inp, tgt = x[:, :-1], x[:, 1:]
    full, _ = net(inp)
    state, parts = None, []
    for start in range(0, 40, 7):  # uneven chunks, last one shorter
        logits, state = net(inp[:, start:start + 7], state=state)
        state = detach_state(state)
        parts.append(logits)
    chunked = torch.cat(parts, dim=1)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)
    loss_full = F.cross_entropy(full.reshape(-1, 20), tgt.reshape(-1))
    loss_chunked = F.cross_entropy(chunked.reshape(-1, 20), tgt.reshape(-1))
    torch.testing.assert_close(loss_chunked, loss_full)


def test_detach_cuts_the_graph():
    net = RecurrentLM(10, "lstm", 4, 8)
    _, state = net(torch.randint(0, 10, (2, 5)))
    h, c = detach_state(state)
    assert not h.requires_grad and not c.requires_grad
    torch.testing.assert_close(h, state[0].detach())


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell,nonlinearity", CELLS)
def test_loss_falls_when_overfitting_a_batch(cell, nonlinearity, num_layers):
    torch.manual_seed(0)
    net = RecurrentLM(16, cell, 16, 32, num_layers=num_layers, nonlinearity=nonlinearity)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randint(4, 16, (4, 21))
    losses = []
    for _ in range(80):
        logits, _ = net(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 16), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_tied_weights_share_one_matrix():
    net = RecurrentLM(30, "gru", 24, 24, tie_weights=True)
    assert net.head.weight is net.encoder.embedding.weight
    with pytest.raises(ValueError, match="embedding_dim == hidden_size"):
        RecurrentLM(30, "gru", 16, 24, tie_weights=True)


def test_unknown_cell_lists_allowed_values():
    with pytest.raises(ValueError, match="rnn, gru, lstm"):
        RecurrentLM(10, "transformer")


def _generate(net, prompt, n, **kw):
    from seqpipe.models.decoding import sample

    logits, state = net(prompt)
    return torch.stack([t for t, _ in sample(net.step, logits[:, -1], state, n, **kw)], 1)


def test_generate_length_and_seed():
    torch.manual_seed(0)
    net = RecurrentLM(12, "lstm", 8, 16).eval()
    prompt = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        a = _generate(net, prompt, 25, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
        b = _generate(net, prompt, 25, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
        greedy = _generate(net, prompt, 10, temperature=0)
    assert a.shape == (1, 25)
    assert torch.equal(a, b)
    assert greedy.shape == (1, 10)
    # greedy is the argmax of the network's own next-token logits, step by step
    with torch.no_grad():
        logits, _ = net(torch.cat([prompt, greedy[:, :-1]], 1))
    assert torch.equal(logits[0, prompt.size(1) - 1:].argmax(-1), greedy[0])
