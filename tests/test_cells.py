"""The reference cells (seqpipe.models.cells) against torch's: same weights -> same outputs, states and gradients; their
parameters load both ways; the Encoder, the config and a real training run take them."""

from __future__ import annotations

import pytest
import torch
from conftest import CONF, tiny_overrides, write_corpus
from torch import nn

from seqpipe import config, fetch, prepare, train
from seqpipe.config import compose, validate
from seqpipe.errors import SeqpipeError
from seqpipe.models.cells import GRURef, LSTMRef
from seqpipe.models.nets import CELLS, Encoder, detach_state, select_state

PAIRS = [(nn.LSTM, LSTMRef), (nn.GRU, GRURef)]
B, T, E, H = 3, 7, 5, 4


def _pair(fused_cls, ref_cls, num_layers, dropout=0.0):
    """A torch cell (float64) and a reference cell holding a copy of its weights."""
    torch.manual_seed(0)
    fused = fused_cls(E, H, num_layers, batch_first=True, dropout=dropout).double()
    ref = ref_cls(E, H, num_layers, batch_first=True, dropout=dropout).double()
    ref.load_state_dict(fused.state_dict())
    return fused, ref


def _run(rnn, x, state, weights):
    """Outputs, final state and the gradients (input, initial state, every parameter) of one weighted sum."""
    x = x.clone().requires_grad_()
    if state is not None:
        state = tuple(s.clone().requires_grad_() for s in state) if isinstance(state, tuple) else \
            state.clone().requires_grad_()
    out, final = rnn(x, state)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out * weights[0]).sum() + sum((f * w).sum() for f, w in zip(finals, weights[1:]))
    rnn.zero_grad()
    loss.backward()
    grads = {"x": x.grad}
    if state is not None:
        grads.update({f"state{i}": s.grad for i, s in enumerate(state if isinstance(state, tuple) else (state,))})
    grads.update({name: p.grad for name, p in rnn.named_parameters()})
    return out, finals, grads


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("fused_cls,ref_cls", PAIRS)
def test_same_weights_give_the_same_outputs_states_and_gradients(fused_cls, ref_cls, num_layers, with_state):
    fused, ref = _pair(fused_cls, ref_cls, num_layers)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, E, generator=g, dtype=torch.float64) * torch.tensor([0.1, 1.0, 3.0]).view(B, 1, 1).double()
    state = None
    if with_state:
        h0 = torch.randn(num_layers, B, H, generator=g, dtype=torch.float64)
        state = (h0, torch.randn(num_layers, B, H, generator=g, dtype=torch.float64)) if ref_cls is LSTMRef else h0
    weights = [torch.randn(B, T, H, generator=g, dtype=torch.float64)] + \
        [torch.randn(num_layers, B, H, generator=g, dtype=torch.float64) for _ in range(2)]
    out_f, finals_f, grads_f = _run(fused, x, state, weights)
    out_r, finals_r, grads_r = _run(ref, x, state, weights)
    assert out_r.shape == (B, T, H) and len(finals_r) == (2 if ref_cls is LSTMRef else 1)
    torch.testing.assert_close(out_r, out_f, rtol=1e-5, atol=1e-5)
    for a, b in zip(finals_r, finals_f):
        assert a.shape == (num_layers, B, H)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert grads_r.keys() == grads_f.keys()
    assert len(grads_r) == 1 + 4 * num_layers + (len(finals_r) if with_state else 0)
    for name in grads_f:
        torch.testing.assert_close(grads_r[name], grads_f[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("fused_cls,ref_cls", PAIRS)
def test_parameters_are_torchs_names_shapes_and_initialisation(fused_cls, ref_cls):
    torch.manual_seed(0)
    fused = fused_cls(E, H, 2, batch_first=True)
    torch.manual_seed(0)
    ref = ref_cls(E, H, 2, batch_first=True)
    assert list(ref.state_dict()) == list(fused.state_dict())  # weight_ih_l0, weight_hh_l0, bias_ih_l0, ...
    for name, p in fused.state_dict().items():
        torch.testing.assert_close(ref.state_dict()[name], p, rtol=0, atol=0, msg=name)  # the same draws
    assert max(p.abs().max() for p in ref.parameters()) <= 1 / H ** 0.5


@pytest.mark.parametrize("fused_cls,ref_cls", PAIRS)
def test_state_dict_round_trip_both_ways(fused_cls, ref_cls, tmp_path):
    torch.manual_seed(0)
    ref = ref_cls(E, H, 2)
    fused = fused_cls(E, H, 2, batch_first=True)
    torch.save(ref.state_dict(), tmp_path / "ref.pt")  # a checkpoint trained with the reference cell ...
    fused.load_state_dict(torch.load(tmp_path / "ref.pt", weights_only=True))  # ... read by torch's (strict)
    x = torch.randn(2, 4, E)
    torch.testing.assert_close(fused(x)[0], ref(x)[0], rtol=1e-5, atol=1e-5)
    back = ref_cls(E, H, 2)
    back.load_state_dict(fused.state_dict())  # and the other way
    for name, p in ref.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], p, rtol=0, atol=0)


@pytest.mark.parametrize("fused_cls,ref_cls", PAIRS)
def test_dropout_between_layers_only_in_training(fused_cls, ref_cls):
    """dropout=1 zeroes what the second layer reads (deterministic, so it compares with torch's); the last layer's
    outputs are not dropped, and eval mode drops nothing."""
    fused, ref = _pair(fused_cls, ref_cls, 2, dropout=1.0)
    x = torch.randn(B, T, E, dtype=torch.float64)
    out_f, out_r = fused.train()(x)[0], ref.train()(x)[0]
    torch.testing.assert_close(out_r, out_f, rtol=1e-5, atol=1e-5)
    assert out_r.abs().min() > 0  # biases alone drive the second layer; nothing zeroed after it
    torch.testing.assert_close(ref.eval()(x)[0], fused.eval()(x)[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref(x)[0], out_r)


def test_only_batch_first_and_padded_inputs():
    with pytest.raises(ValueError, match="batch_first must be True"):
        GRURef(E, H, batch_first=False)
    seq = nn.utils.rnn.pack_padded_sequence(torch.randn(2, 3, E), torch.tensor([3, 2]), batch_first=True)
    with pytest.raises(TypeError, match="packed"):
        LSTMRef(E, H)(seq)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_encoder_with_a_reference_cell_equals_torchs(cell, bidirectional):
    kw = dict(embedding_dim=6, hidden_size=5, num_layers=2, bidirectional=bidirectional)
    torch.manual_seed(0)
    fused = Encoder(20, cell, **kw).eval()
    torch.manual_seed(1)
    ref = Encoder(20, f"{cell}_ref", **kw).eval()
    assert list(ref.state_dict()) == list(fused.state_dict())
    ref.load_state_dict(fused.state_dict())  # strict: the same names and shapes
    x, lengths = torch.randint(4, 20, (3, 9)), torch.tensor([9, 4, 6])
    x[1, 4:], x[2, 6:] = 0, 0
    out_f, state_f = fused(x, lengths)
    out_r, state_r = ref(x, lengths)
    torch.testing.assert_close(out_r, out_f, rtol=1e-5, atol=1e-5)
    if bidirectional:
        assert state_r is None and state_f is None
        return
    for a, b in zip(*(s if isinstance(s, tuple) else (s,) for s in (state_r, state_f))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # carried state (TBPTT), row selection (beam search), detach, and the step-by-step trace (gradient flow)
    rows = torch.tensor([2, 0])
    picked, cut = select_state(state_r, rows), detach_state(state_r)
    assert isinstance(picked, tuple) == (cell == "lstm") == isinstance(cut, tuple)
    more = torch.randint(4, 20, (2, 5))
    torch.testing.assert_close(ref(more, state=picked)[0], fused(more, state=select_state(state_f, rows))[0],
                               rtol=1e-5, atol=1e-5)
    ref.trace = []
    traced, _ = ref(x)
    torch.testing.assert_close(traced, fused(x)[0], rtol=1e-5, atol=1e-5)
    assert len(ref.trace) == x.size(1) and ref.trace[0].shape == (2, 3, 5)


def test_packed_is_refused_with_a_reference_cell():
    with pytest.raises(ValueError, match="model.packed=true .* model.cell=gru_ref .* set model.packed=false"):
        Encoder(20, "gru_ref", packed=True)
    with pytest.raises(SeqpipeError, match="model.packed=true .* set model.packed=false"):
        validate(compose(["recipe=imdb", "model.cell=lstm_ref", "model.packed=true"], config_dir=CONF))


def test_config_takes_the_reference_cells_and_lists_them():
    assert config.CELLS == tuple(CELLS)  # config.py repeats the names so that it never loads torch
    validate(compose(["model.cell=lstm_ref"], config_dir=CONF))
    validate(compose(["model.cell=gru_ref"], config_dir=CONF))
    with pytest.raises(SeqpipeError, match="choose one of: rnn, gru, lstm, lstm_ref, gru_ref"):
        validate(compose(["model.cell=gru_rf"], config_dir=CONF))


def test_a_tiny_training_run_with_gru_ref_learns(tmp_path, monkeypatch):
    write_corpus(tmp_path / "corpus", n_docs=3, lines=30)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose([*tiny_overrides(tmp_path), "model.cell=gru_ref", "model.hidden_size=16", "model.embedding_dim=8",
                   "data.bptt=16", "trainer.max_epochs=3"], config_dir=CONF)
    fetch.run(cfg)
    prepare.run(cfg)
    result = train.run(cfg)
    history = (tmp_path / "reports" / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("val/loss")
    losses = [float(row.split(",")[column]) for row in history[1:]]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    saved = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    assert "net.encoder.rnn.weight_hh_l0" in saved and saved["net.encoder.rnn.weight_hh_l0"].shape == (3 * 16, 16)
