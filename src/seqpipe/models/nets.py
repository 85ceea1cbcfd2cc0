"""Plain torch networks. One contract for every task: `forward(x, lengths=None, state=None) -> (logits, state)`.

An `Encoder` (input layer -> RNN/GRU/LSTM stack, optionally bidirectional) feeds one of three heads:
`RecurrentLM` (next-token logits per step), `SequenceClassifier` (one output vector per sequence: class logits, or
a value when regressing) and `SequenceTagger` (one label per step). The input layer is an adapter: token ids go
through an Embedding, float frames (B, T, F) through `FrameInput` (standardise, then a Linear layer): the input
kind (seqpipe.data.inputs) builds it.
Padding never changes the outputs at valid positions: unidirectional layers are causal, and the backward direction
reads each sequence reversed within its own length.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqpipe.data.vocab import PAD_ID
from seqpipe.models.cells import GRURef, LSTMRef

State = Tensor | tuple[Tensor, Tensor] | None
# torch's fused cells, and the reference cells written out gate by gate (seqpipe.models.cells: teaching, diagnostics)
CELLS: dict[str, type[nn.Module]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM, "lstm_ref": LSTMRef,
                                     "gru_ref": GRURef}
POOLINGS = ("last", "mean", "max")


def detach_state(state: State) -> State:
    """Cut the graph at a chunk boundary (truncated BPTT) while keeping the values."""
    if state is None:
        return None
    if isinstance(state, tuple):  # LSTM: (h, c)
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


def select_state(state: State, rows: Tensor) -> State:
    """The hidden state (layers, N, H) of the given rows (beam search copies and reorders rows)."""
    if isinstance(state, tuple):  # LSTM: (h, c)
        return tuple(s[:, rows] for s in state)  # type: ignore[return-value]
    return None if state is None else state[:, rows]


def cat_states(states: list[State]) -> State:
    """The hidden states of several row groups as one (layers, N1 + N2 + ..., H): rows that run together."""
    if isinstance(states[0], tuple):  # LSTM: (h, c)
        return tuple(torch.cat(parts, dim=1) for parts in zip(*states))  # type: ignore[return-value]
    return torch.cat(states, dim=1)  # type: ignore[arg-type]


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row of (B, T, ...) within its first lengths[b] steps; padding stays at the end."""
    T = x.size(1)
    steps = torch.arange(T, device=x.device).unsqueeze(0)            # (1, T)
    idx = (lengths.unsqueeze(1) - 1 - steps)                          # (B, T)
    idx = torch.where(idx >= 0, idx, steps.expand_as(idx))            # padding maps to itself
    idx = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def run_rnn(rnn: nn.Module, x: Tensor, lengths: Tensor | None, state: State, packed: bool) -> tuple[Tensor, State]:
    """One RNN call; with `packed` the padded steps are skipped (pack_padded_sequence)."""
    if not packed or lengths is None:
        return rnn(x, state)
    seq = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, state = rnn(seq, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
    return out, state


def input_layer(inputs: int | dict, dim: int) -> nn.Module:
    """The input kind's layer (seqpipe.data.inputs): an Embedding for a vocabulary size (or {"kind": "tokens",
    "vocab_size": V}); a FrameInput for {"kind": "frames", "features": F, "mean": [...], "std": [...]}
    (prepared/meta.json's `inputs`)."""
    if isinstance(inputs, int):  # a language model's vocabulary size, as seqpipe.data.inputs.Tokens builds it
        return nn.Embedding(inputs, dim, padding_idx=PAD_ID)
    # lazy: seqpipe.data.inputs loads MLflow and pandas (~1.5 s), which a language model that `seqpipe generate`
    # loads on its own (seqpipe.serving.local) does without
    from seqpipe.data.inputs import kind_of

    return kind_of(inputs).layer(dim)


class Encoder(nn.Module):
    """Input layer -> stacked RNN/GRU/LSTM. Output (B, T, D * H) with D = 2 when bidirectional. `inputs` is a
    vocabulary size or an input spec (see `input_layer`)."""

    def __init__(self, inputs: int | dict, cell: str = "lstm", embedding_dim: int = 64, hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.0, nonlinearity: str = "tanh", bidirectional: bool = False,
                 packed: bool = False):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell={cell!r} is not one of {', '.join(CELLS)}")
        rnn_cls = CELLS[cell]
        if packed and rnn_cls in (LSTMRef, GRURef):
            raise ValueError(f"model.packed=true needs one of torch's fused cells (rnn, gru, lstm): model.cell={cell} "
                             "steps through the padded batch and cannot read a packed sequence; set model.packed=false")
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.embedding = input_layer(inputs, embedding_dim)
        self.drop = nn.Dropout(dropout)
        self.bidirectional, self.packed = bidirectional, packed
        # A list to collect the hidden state after every step (gradient-flow diagnostics, seqpipe.models.gradflow): the
        # layers then run one step at a time so that each step's state is a node of the graph. None: one fused call.
        self.trace: list[Tensor] | None = None
        self.output_size = hidden_size * (2 if bidirectional else 1)
        if not bidirectional:  # one fused multi-layer call: the fastest kernel, and a state to carry (TBPTT)
            self.rnn = rnn_cls(embedding_dim, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0, **extra)
        else:  # layer by layer, so the backward direction can read each sequence reversed within its length
            sizes = [embedding_dim] + [2 * hidden_size] * (num_layers - 1)
            self.fwd = nn.ModuleList(rnn_cls(n, hidden_size, 1, batch_first=True, **extra) for n in sizes)
            self.bwd = nn.ModuleList(rnn_cls(n, hidden_size, 1, batch_first=True, **extra) for n in sizes)

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: State = None) -> tuple[Tensor, State]:
        h = self.drop(self.embedding(x))  # (B, T, E) from ids (B, T) or frames (B, T, F)
        if not self.bidirectional:
            if self.trace is None:
                out, state = run_rnn(self.rnn, h, lengths, state, self.packed)
            else:
                out, state = self.stepwise(h, state)
            return self.drop(out), state  # (B, T, H)
        if lengths is None:
            lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        for i, (fwd, bwd) in enumerate(zip(self.fwd, self.bwd)):
            if i:
                h = self.drop(h)
            out_f, _ = run_rnn(fwd, h, lengths, None, self.packed)                     # (B, T, H)
            out_b, _ = run_rnn(bwd, reverse_padded(h, lengths), lengths, None, self.packed)
            h = torch.cat([out_f, reverse_padded(out_b, lengths)], dim=-1)            # (B, T, 2H)
        return self.drop(h), None


    def stepwise(self, h: Tensor, state: State) -> tuple[Tensor, State]:
        """The unidirectional stack one step at a time, appending each step's hidden state h_t (layers, B, H) to
        self.trace; the outputs equal the fused call's."""
        outs = []
        for t in range(h.size(1)):
            out, state = self.rnn(h[:, t:t + 1], state)
            self.trace.append(state[0] if isinstance(state, tuple) else state)  # type: ignore[union-attr]
            outs.append(out)
        return torch.cat(outs, dim=1), state


def _mask(lengths: Tensor, T: int) -> Tensor:
    return torch.arange(T, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)


class RecurrentLM(nn.Module):
    """Encoder -> linear layer over the vocabulary (next-token logits at every step)."""

    def __init__(self, vocab_size: int, cell: str = "lstm", embedding_dim: int = 64, hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.0, nonlinearity: str = "tanh", tie_weights: bool = False,
                 **encoder: object):
        super().__init__()
        if encoder.get("bidirectional"):
            raise ValueError("a language model reads left to right: set model.bidirectional=false")
        self.encoder = Encoder(vocab_size, cell, embedding_dim, hidden_size, num_layers, dropout, nonlinearity,
                               **encoder)  # type: ignore[arg-type]
        self.head = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            if embedding_dim != hidden_size:
                raise ValueError("tie_weights needs embedding_dim == hidden_size")
            # Input and output embeddings share one matrix (Press & Wolf 2017): fewer parameters, often lower loss.
            self.head.weight = self.encoder.embedding.weight

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: State = None) -> tuple[Tensor, State]:
        out, state = self.encoder(x, lengths, state)  # (B, T, H)
        return self.head(out), state                  # (B, T, V)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """One token per row (N,) -> the next token's logits (N, V): the step of seqpipe.models.decoding."""
        logits, state = self(tokens.unsqueeze(1), state=state)
        return logits[:, -1], state


class SequenceClassifier(nn.Module):
    """Encoder -> pooling over valid steps (last state per direction, mean or max) -> (B, C): class logits, or
    C = 1 value per sequence when regressing."""

    def __init__(self, inputs: int | dict, num_classes: int, pooling: str = "last", **encoder: object):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
        self.encoder = Encoder(inputs, **encoder)  # type: ignore[arg-type]
        self.pooling = pooling
        self.head = nn.Linear(self.encoder.output_size, num_classes)

    def pool(self, out: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, D) -> (B, D) over the first lengths[b] steps of each row."""
        if self.pooling == "last":
            last = out[torch.arange(out.size(0), device=out.device), lengths - 1]  # (B, D): forward's last step
            if not self.encoder.bidirectional:
                return last
            H = out.size(-1) // 2
            return torch.cat([last[:, :H], out[:, 0, H:]], dim=-1)  # backward direction ends at step 0
        mask = _mask(lengths, out.size(1)).unsqueeze(-1)  # (B, T, 1)
        if self.pooling == "mean":
            return (out * mask).sum(1) / lengths.unsqueeze(1).clamp(min=1)
        return out.masked_fill(~mask, float("-inf")).max(1).values

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: State = None) -> tuple[Tensor, State]:
        if lengths is None:
            lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        out, _ = self.encoder(x, lengths)          # (B, T, D)
        return self.head(self.pool(out, lengths)), None  # (B, C)


class SequenceTagger(nn.Module):
    """Encoder -> class logits at every step (B, T, C): many-to-many with Tx = Ty (tagging), or C outputs per step
    (the next frame's notes). A unidirectional encoder returns its state, so generation can go on step by step."""

    def __init__(self, inputs: int | dict, num_classes: int, **encoder: object):
        super().__init__()
        self.encoder = Encoder(inputs, **encoder)  # type: ignore[arg-type]
        self.head = nn.Linear(self.encoder.output_size, num_classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: State = None) -> tuple[Tensor, State]:
        out, state = self.encoder(x, lengths, state)  # (B, T, D)
        return self.head(out), state                  # (B, T, C)
