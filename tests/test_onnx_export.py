"""ONNX export (seqpipe.serving.onnx_export): every network kind a task serves gives the same logits in ONNX
Runtime as in PyTorch (max abs difference <= 1e-4) at batch sizes and lengths other than the traced ones; a language
model's state steps; a sequence-to-sequence model's encoder and decoder graphs decode the tokens PyTorch decodes
(greedy and beam); int8 stays close; what cannot be exported is refused with the reason."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from seqpipe.errors import SeqpipeError
from seqpipe.models.attention import Seq2Seq
from seqpipe.models.nets import RecurrentLM, SequenceClassifier, SequenceTagger
from seqpipe.serving.onnx_export import OnnxNet, compared_logits, export_model
from seqpipe.tasks.ctc import CTCNet
from seqpipe.tasks.seq2seq_eval import decode

FRAMES = {"kind": "frames", "features": 6, "mean": [0.1] * 6, "std": [2.0] * 6}
ENC = {"embedding_dim": 8, "hidden_size": 12, "dropout": 0.3}  # dropout: a network left in training mode would show
NETS = {
    "lm-lstm-2layers": lambda: RecurrentLM(30, cell="lstm", num_layers=2, **ENC),
    "lm-gru": lambda: RecurrentLM(30, cell="gru", **ENC),
    "lm-rnn-relu": lambda: RecurrentLM(30, cell="rnn", nonlinearity="relu", **ENC),
    "classify-bilstm-last": lambda: SequenceClassifier(30, 5, cell="lstm", bidirectional=True, **ENC),
    "classify-gru-mean-packed": lambda: SequenceClassifier(30, 3, pooling="mean", cell="gru", packed=True, **ENC),
    "regress-frames-max": lambda: SequenceClassifier(FRAMES, 1, pooling="max", cell="lstm", **ENC),
    "tag-bigru-2layers": lambda: SequenceTagger(30, 4, cell="gru", bidirectional=True, num_layers=2, **ENC),
    "pianoroll-frames": lambda: SequenceTagger(FRAMES, 6, cell="lstm", **ENC),
    "ctc-frames-stacked": lambda: CTCNet(FRAMES, 7, stack=2, cell="gru", bidirectional=True, **ENC),
    "seq2seq-bilstm-bahdanau-2layers": lambda: Seq2Seq(30, 20, cell="lstm", bidirectional=True, num_layers=2, **ENC),
    "seq2seq-gru-luong": lambda: Seq2Seq(30, 20, cell="gru", attention="luong", **ENC),
}


def _batch(net: torch.nn.Module, frames: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 13, 6, generator=g) if frames else torch.randint(1, 30, (7, 13), generator=g)
    return x, torch.tensor([13, 1, 5, 13, 9, 2, 11])


@pytest.mark.parametrize("quantize", [None, "int8"])
@pytest.mark.parametrize("kind", list(NETS))
def test_onnx_runtime_gives_the_logits_pytorch_gives(kind, quantize, tmp_path):
    torch.manual_seed(0)
    net = NETS[kind]().eval()
    served = SimpleNamespace(net=net, meta={"task": kind}, limits={}, model="test/1", vocab=None)
    path = export_model(served, tmp_path, quantize)
    assert not any(m.training for m in net.modules())  # the caller's network as it was: in eval mode
    first = "encoder" if kind.startswith("seq2seq") else "model"
    assert path.name == f"{first}{'.int8' if quantize else ''}.onnx" and (tmp_path / "export.json").is_file()
    onnx = OnnxNet(tmp_path)
    x, lengths = _batch(net, "frames" in kind)
    with torch.no_grad():
        if kind.startswith("seq2seq"):  # its first decoder steps, and whole decodings
            assert sorted(p.name for p in tmp_path.glob("*.onnx")) == \
                (["decoder.int8.onnx", "encoder.int8.onnx"] if quantize else ["decoder.onnx", "encoder.onnx"])
            want, got = compared_logits(net, x, lengths), compared_logits(onnx, x, lengths)
            xs = [x[i, :n] for i, n in enumerate(lengths.tolist())]
            for width in (1, 4):
                torch_hyps, onnx_hyps = decode(net, xs, width, max_len=10), decode(onnx, xs, width, max_len=10)
                same = [a[0].tokens == b[0].tokens for a, b in zip(torch_hyps, onnx_hyps)]
                assert all(same) if not quantize else sum(same) >= 5, (width, same)
        elif kind.startswith("lm"):
            want, want_state = net(x)
            got, got_state = onnx(x)
            state = want_state if isinstance(want_state, tuple) else (want_state,)
            got_s = got_state if isinstance(got_state, tuple) else (got_state,)
            assert all(torch.allclose(a, b, atol=1e-4 if not quantize else 0.05) for a, b in zip(state, got_s))
            # stepping from a state: the rest of the sequence one token at a time gives the whole pass's logits
            first, state = net(x[:, :6])
            step_logits = [onnx.step(x[:, t], state)[0] for t in [6]]
            assert (step_logits[0] - net(x[:, 6:7], state=state)[0][:, -1]).abs().max() <= (1e-4 if not quantize
                                                                                          else 0.05)
        else:
            want, _ = net(x, lengths)
            got, _ = onnx(x, lengths)
            if want.dim() == 3:  # per step: only the valid steps are defined (packing off in the export)
                valid = torch.arange(x.size(1))[None, :] < lengths[:, None]
                if kind.startswith("ctc"):
                    valid = torch.arange(want.size(1))[None, :] < net.out_lengths(lengths)[:, None]
                want, got = want[valid], got[valid]
    diff = float((want - got).abs().max())
    assert diff <= (1e-4 if quantize is None else 0.05), diff  # int8: close, not equal (the bench reports metrics)
    if quantize:
        assert (want.argmax(-1) == got.argmax(-1)).float().mean() >= 0.8


def test_what_cannot_be_exported_is_refused_with_the_reason(tmp_path):
    for net, reason in ((RecurrentLM(30, cell="lstm_ref", **ENC), "reference cells"),
                        (Seq2Seq(30, 20, cell="gru_ref", **ENC), "reference cells")):
        with pytest.raises(SeqpipeError, match=reason):
            export_model(SimpleNamespace(net=net, meta={}, limits={}, model="x", vocab=None), tmp_path)
        assert not list(tmp_path.glob("*.onnx"))  # nothing half-written
