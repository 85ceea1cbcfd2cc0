"""A served model's network as ONNX, for ONNX Runtime: batch and sequence length dynamic; a language model's
recurrent state as inputs and outputs (h0/c0 in, h/c out) so that generation steps it one token at a time; with
`int8`, the recurrent and linear layers' weights dynamically quantized (onnxruntime.quantization). Beside the graph:
the vocabulary and the model's meta, so the folder is all a client needs (`OnnxNet` runs it).

The networks that read a whole sequence (classify, tag, regress, ctc, pianoroll's tagger) take `x` (token ids, or
frames B x T x F) and `lengths`, and give `logits`. A sequence-to-sequence model is two graphs, driven step by step
from Python as the PyTorch model is (seqpipe.models.decoding): `encoder.onnx` (x, lengths -> the decoder's first
state: memory, keys, mask, h0[, c0], feed, weights) and `decoder.onnx` (one step: tokens and the state -> logits and
the next state). The gate-by-gate reference cells (lstm_ref, gru_ref: Python loops over time) are refused."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from seqpipe.atomic import atomic_path, write_json
from seqpipe.data.vocab import BOS_ID, load_with_tokenizer
from seqpipe.errors import SeqpipeError
from seqpipe.models.attention import DecoderState, Seq2Seq
from seqpipe.models.cells import GRURef, LSTMRef
from seqpipe.models.nets import Encoder, RecurrentLM
from seqpipe.serving.served import Served

OPSET = 17
FORMAT = 1  # of export.json; an OnnxNet refuses a folder written by a newer seqpipe
STEP_GRAPH = "decoder.onnx"  # a sequence-to-sequence model's second graph, beside the first


class _Stepped(nn.Module):
    """A language model with its state as plain tensors: (x, h0[, c0]) -> (logits, h[, c])."""

    def __init__(self, net: RecurrentLM, lstm: bool):
        super().__init__()
        self.net, self.lstm = net, lstm

    def forward(self, x: Tensor, h0: Tensor, c0: Tensor | None = None) -> tuple[Tensor, ...]:
        logits, state = self.net(x, None, (h0, c0) if self.lstm else h0)
        return (logits, *state) if self.lstm else (logits, state)


class _Whole(nn.Module):
    """A network that reads whole sequences: (x, lengths) -> logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.net(x, lengths)[0]


class _Start(nn.Module):
    """A sequence-to-sequence model's encoder and bridge: (x, lengths) -> the decoder's first state as tensors."""

    def __init__(self, net: Seq2Seq):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        s = self.net.start(x, lengths)
        return s.memory, s.keys, s.mask, *(s.rnn if isinstance(s.rnn, tuple) else (s.rnn,)), s.feed, s.weights


class _DecoderStep(nn.Module):
    """One decoder step on the state as tensors: (tokens, memory, keys, mask, feed, h[, c]) -> (logits, next h[, c],
    next feed, weights)."""

    def __init__(self, net: Seq2Seq, lstm: bool):
        super().__init__()
        self.net, self.lstm = net, lstm

    def forward(self, tokens: Tensor, memory: Tensor, keys: Tensor, mask: Tensor, feed: Tensor, h: Tensor,
                c: Tensor | None = None) -> tuple[Tensor, ...]:
        state = DecoderState(memory, keys, mask, (h, c) if self.lstm else h, feed, memory.new_zeros(0))  # type: ignore
        logits, new = self.net.step(tokens, state)
        return logits, *(new.rnn if isinstance(new.rnn, tuple) else (new.rnn,)), new.feed, new.weights


def _check(net: nn.Module) -> None:
    if any(isinstance(m, LSTMRef | GRURef) for m in net.modules()):
        raise SeqpipeError("this model's cells are seqpipe's reference cells (model.cell=lstm_ref or gru_ref), which "
                           "step through time in Python: ONNX export needs torch's fused cells (rnn, gru, lstm)")


def fixed_input(net: nn.Module, batch: int = 4, steps: int = 9, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A batch for tracing and checking, the same for the same seed: token ids for an embedding, frames for a frame
    input (the input layer decides), and lengths from `steps` down."""
    g = torch.Generator().manual_seed(seed)
    layer = next(m for m in net.modules() if isinstance(m, Encoder)).embedding
    stack = getattr(net, "stack", 1)  # a CTC network reads k frames side by side: its input layer sees k F features
    if isinstance(layer, nn.Embedding):
        x = torch.randint(1, layer.num_embeddings, (batch, steps * stack), generator=g)
    else:
        x = torch.randn(batch, steps * stack, layer.proj.in_features // stack, generator=g)
    return x, torch.tensor([x.size(1)] + [max(1, x.size(1) - 2 * i) for i in range(1, batch)])


def export_net(net: nn.Module, path: Path) -> dict:
    """Write `net` (eval mode, packing off: outputs at valid steps are the same) to `path` as ONNX; what the graph
    takes and gives, for export.json."""
    _check(net)
    modes = {m: m.training for m in net.modules()}
    net.eval()
    encoders = [m for m in net.modules() if isinstance(m, Encoder)]
    packed = [m.packed for m in encoders]
    for m in encoders:  # pack_padded_sequence does not export; padding never changes the valid steps' outputs
        m.packed = False
    try:
        return _export(net, path)
    finally:  # the caller's network as it was (torch.onnx.export leaves every module in training mode: a served
        for m, flag in zip(encoders, packed):  # network would then answer with dropout on)
            m.packed = flag
        for m, training in modes.items():
            m.training = training


def _export(net: nn.Module, path: Path) -> dict:
    x, lengths = fixed_input(net, batch=2, steps=5)
    batch_time = {0: "batch", 1: "time"}
    if isinstance(net, Seq2Seq):
        return _export_seq2seq(net, path, x, lengths)
    if isinstance(net, RecurrentLM):
        rnn = net.encoder.rnn
        lstm = isinstance(rnn, nn.LSTM)
        shape = (rnn.num_layers, x.size(0), rnn.hidden_size)
        args: tuple = (x, torch.zeros(shape), *([torch.zeros(shape)] if lstm else []))
        names = ["x", "h0", *(["c0"] if lstm else [])]
        outputs = ["logits", "h", *(["c"] if lstm else [])]
        wrapper: nn.Module = _Stepped(net, lstm)
        axes = {"x": batch_time, "logits": batch_time, **{n: {1: "batch"} for n in [*names[1:], *outputs[1:]]}}
        spec = {"reads": "stepped", "state": names[1:], "state_shape": [rnn.num_layers, rnn.hidden_size]}
    else:
        args, names, outputs, wrapper = (x, lengths), ["x", "lengths"], ["logits"], _Whole(net)
        axes = {"x": batch_time, "lengths": {0: "batch"}, "logits": {0: "batch", 1: "time"}}
        spec = {"reads": "whole"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values; the parity test is the check
        torch.onnx.export(wrapper, args, str(tmp), input_names=names, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)  # the TorchScript exporter: dynamic time axis as is
    return {**spec, "inputs": names, "outputs": outputs, "x": "ids" if x.dtype == torch.long else "frames"}


def _export_seq2seq(net: Seq2Seq, path: Path, x: Tensor, lengths: Tensor) -> dict:
    """The encoder graph at `path` (encoder.onnx) and the decoder-step graph beside it (decoder.onnx)."""
    lstm = net.cell.startswith("lstm")
    rnn = ["h", *(["c"] if lstm else [])]
    state = ["memory", "keys", "mask", "feed", *rnn]  # the decoder's state, as the step graph takes it
    batch, batch_time = {0: "batch"}, {0: "batch", 1: "time"}
    axes = {"memory": batch_time, "keys": batch_time, "mask": batch_time, "weights": batch_time, "feed": batch,
            **{n: {1: "batch"} for n in rnn}}
    start = net.start(x, lengths)
    first = (start.rnn if lstm else (start.rnn,))
    tokens = net.bos(x.size(0))
    step_args = (tokens, start.memory, start.keys, start.mask, start.feed, *first)
    graphs = ((_Start(net), (x, lengths), ["x", "lengths"], ["memory", "keys", "mask", *rnn, "feed", "weights"],
               {"x": batch_time, "lengths": batch, **axes}, path),
              (_DecoderStep(net, lstm), step_args, ["tokens", *state],  # outputs named apart from the inputs
               ["logits", *[f"next_{n}" for n in rnn], "next_feed", "weights"],
               {"tokens": batch, "logits": batch, "next_feed": batch, **{f"next_{n}": {1: "batch"} for n in rnn},
                **axes}, path.with_name(STEP_GRAPH)))
    for wrapper, args, names, outputs, dynamic, target in graphs:
        with atomic_path(target) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, args, str(tmp), input_names=names, output_names=outputs, dynamic_axes=dynamic,
                              opset_version=OPSET, dynamo=False)
    return {"reads": "seq2seq", "state": rnn, "inputs": ["x", "lengths"], "outputs": ["logits"],
            "x": "ids" if x.dtype == torch.long else "frames"}


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the graph's weights (LSTM, MatMul, Gemm: the recurrent and linear layers);
    activations stay float and are quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # lazy: only `--quantize int8` needs it
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with atomic_path(target) as tmp:
        # ONNX Runtime's own advice before quantizing: shapes inferred and the graph optimised first
        quant_pre_process(str(source), str(tmp))
        quantize_dynamic(str(tmp), str(tmp), weight_type=QuantType.QInt8)


def export_model(served: object, out_dir: Path, quantize: str | None = None) -> Path:
    """A loaded served model (seqpipe.serving.served.Served: net, meta, vocab) as a folder: model.onnx (or
    model.int8.onnx; a sequence-to-sequence model's encoder.onnx and decoder.onnx, or their .int8.onnx),
    export.json (graph spec, meta, limits, decoding defaults, which model it came from) and vocab.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    seq2seq = isinstance(served.net, Seq2Seq)  # type: ignore[attr-defined]
    first = out_dir / ("encoder.onnx" if seq2seq else "model.onnx")
    spec = export_net(served.net, first)  # type: ignore[attr-defined]
    graphs = [first, *([first.with_name(STEP_GRAPH)] if seq2seq else [])]
    if quantize == "int8":
        for graph in graphs:
            quantize_int8(graph, graph.with_suffix(".int8.onnx"))
            graph.unlink()
        graphs = [g.with_suffix(".int8.onnx") for g in graphs]
    if getattr(served, "vocab", None) is not None:
        served.vocab.save(out_dir / "vocab.json")  # type: ignore[attr-defined]
    write_json(out_dir / "export.json", {"format": FORMAT, "graph": graphs[0].name, "quantize": quantize, **spec,
                                         **({"step_graph": graphs[1].name} if seq2seq else {}),
                                         "meta": served.meta, "limits": served.limits,  # type: ignore[attr-defined]
                                         "decode": getattr(served, "decode", {}), "max_len": getattr(
                                             served, "max_len", None), "model": served.model})  # type: ignore
    return graphs[0]


def compared_logits(net: nn.Module, x: Tensor, lengths: Tensor, steps: int = 4, seed: int = 0) -> Tensor:
    """What the parity checks compare, for a PyTorch network or its OnnxNet alike: a whole-sequence network's
    logits; a sequence-to-sequence model's first `steps` decoder steps (from <bos>, then fixed target tokens),
    stacked (B, steps, V)."""
    with torch.no_grad():
        if not (isinstance(net, Seq2Seq) or getattr(net, "spec", {}).get("reads") == "seq2seq"):
            return net(x, lengths)[0]
        g = torch.Generator().manual_seed(seed)
        logits, state = net.step(net.bos(x.size(0)), net.start(x, lengths))  # type: ignore[operator]
        out = [logits]
        for _ in range(steps - 1):
            tokens = torch.randint(4, logits.size(-1), (x.size(0),), generator=g)
            logits, state = net.step(tokens, state)  # type: ignore[operator]
            out.append(logits)
        return torch.stack(out, 1)


def check_parity(net: nn.Module, onnx: nn.Module, limit: float | None) -> str:
    """Run the PyTorch network and its exported graph on one fixed batch (a sequence-to-sequence model: its first
    decoder steps); refuse (SeqpipeError) a graph whose logits differ by more than `limit` (None: report only)."""
    x, lengths = fixed_input(net)
    want, got = compared_logits(net, x, lengths), compared_logits(onnx, x, lengths)
    diff = float((want - got).abs().max())
    agree = float((want.argmax(-1) == got.argmax(-1)).float().mean()) if want.size(-1) > 1 else float("nan")
    if limit is not None and not diff <= limit:
        raise SeqpipeError(f"the exported graph disagrees with PyTorch (max |logit difference| {diff:.2e} > {limit}): "
                           "please report it with the model's config")
    return f"max |logit difference| vs PyTorch {diff:.1e}, same argmax on {agree:.1%} of outputs"


def runtime_net(served: object, threads: int | None = None) -> nn.Module:
    """A served model's network run by ONNX Runtime (a server's SEQPIPE_SERVE_RUNTIME=onnx): exported to a temporary
    folder (ONNX Runtime reads the graph into memory) and checked against PyTorch as `seqpipe export` checks it."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SeqpipeError("SEQPIPE_SERVE_RUNTIME=onnx needs onnx and onnxruntime in the server's environment: pip "
                           "install 'seqpipe[onnx]'") from None
    with tempfile.TemporaryDirectory(prefix="seqpipe-onnx-") as tmp:
        export_model(served, Path(tmp))
        onnx = OnnxNet(tmp, threads)
    check_parity(served.net, onnx, 1e-4)  # type: ignore[attr-defined]
    return onnx


class OnnxNet(nn.Module):
    """An exported folder run by ONNX Runtime behind the network contract (`forward(x, lengths, state)` -> (logits,
    state); a language model's `step`), so seqpipe's decoding and the served model's code drive it as they drive
    the PyTorch network."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort  # lazy: ONNX Runtime only for exported models

        folder = Path(folder)
        self.spec = json.loads((folder / "export.json").read_text())
        if self.spec.get("format", 0) > FORMAT:
            raise SeqpipeError(f"{folder} was exported by a newer seqpipe (format {self.spec['format']}): upgrade")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / self.spec["graph"]), options,
                                            providers=["CPUExecutionProvider"])
        if "step_graph" in self.spec:  # sequence to sequence: the encoder (`start`), then the decoder step by step
            self.step_session = ort.InferenceSession(str(folder / self.spec["step_graph"]), options,
                                                     providers=["CPUExecutionProvider"])
        self.takes = {i.name for i in self.session.get_inputs()}  # a unidirectional tagger's graph drops `lengths`
        self._device = nn.Parameter(torch.empty(0), requires_grad=False)  # decoding asks a network for its device

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: object = None) -> tuple[Tensor, object]:
        feeds = {"x": x.numpy()}
        if self.spec["reads"] == "stepped":  # a language model: its state in and out
            layers, hidden = self.spec["state_shape"]
            if state is None:
                zeros = np.zeros((layers, x.size(0), hidden), dtype=np.float32)
                state = tuple(torch.from_numpy(zeros) for _ in self.spec["state"])
            elif isinstance(state, Tensor):
                state = (state,)
            feeds |= {n: s.numpy() for n, s in zip(self.spec["state"], state)}  # type: ignore[union-attr]
            logits, *new = (torch.from_numpy(o) for o in self.session.run(None, feeds))
            return logits, tuple(new) if len(new) > 1 else new[0]
        if lengths is None:
            lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long)
        feeds |= {"lengths": lengths.numpy()} if "lengths" in self.takes else {}
        (logits,) = self.session.run(None, feeds)
        return torch.from_numpy(logits), None

    def step(self, tokens: Tensor, state: object) -> tuple[Tensor, object]:
        """One token per row -> the next-token logits (N, V) and the new state (a language model's, or a
        sequence-to-sequence decoder's DecoderState)."""
        if isinstance(state, DecoderState):
            rnn = state.rnn if isinstance(state.rnn, tuple) else (state.rnn,)
            feeds = {"tokens": tokens, "memory": state.memory, "keys": state.keys, "mask": state.mask,
                     "feed": state.feed, **dict(zip(self.spec["state"], rnn))}
            logits, *new, feed, weights = self._run(self.step_session, feeds)
            return logits, DecoderState(state.memory, state.keys, state.mask, tuple(new) if len(new) > 1 else new[0],
                                        feed, weights)
        logits, state = self(tokens.unsqueeze(1), state=state)
        return logits[:, -1], state

    def start(self, x: Tensor, lengths: Tensor | None = None) -> DecoderState:
        """A sequence-to-sequence model's source (B, S) encoded: the decoder's first state."""
        if lengths is None:
            lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long)
        memory, keys, mask, *rnn, feed, weights = self._run(self.session, {"x": x, "lengths": lengths})
        return DecoderState(memory, keys, mask, tuple(rnn) if len(rnn) > 1 else rnn[0], feed, weights)

    @staticmethod
    def select(state: DecoderState, rows: Tensor) -> DecoderState:
        return state.select(rows)

    @staticmethod
    def bos(n: int, device: torch.device | None = None) -> Tensor:
        return torch.full((n,), BOS_ID, dtype=torch.long)

    @staticmethod
    def _run(session: object, feeds: dict[str, Tensor]) -> list[Tensor]:
        arrays = {k: np.ascontiguousarray(v.numpy()) for k, v in feeds.items()}
        return [torch.from_numpy(o) for o in session.run(None, arrays)]  # type: ignore[attr-defined]



def load_served(folder: str | Path, threads: int | None = None) -> Served:
    """An exported folder as a served model that generates, scores or decodes as the PyTorch one does (`Served`), its
    network run by ONNX Runtime (a sequence-to-sequence model's output vocabulary in `state`)."""
    folder = Path(folder)
    served = Served()
    served.net = OnnxNet(folder, threads)
    spec = served.net.spec
    served.meta, served.limits, served.model, served.run_id = spec["meta"], spec["limits"], spec["model"], ""
    served.decode, served.max_len = spec.get("decode") or {}, spec.get("max_len")
    if (folder / "vocab.json").is_file():
        served.vocab, served.tokenizer = load_with_tokenizer(folder / "vocab.json")
    if "step_graph" in spec:  # sequence to sequence: the output vocabulary, read from the meta as the task reads it
        from seqpipe.tasks import get_task

        served.state = get_task(spec["meta"]["task"]).load_served(spec["meta"])
    return served
