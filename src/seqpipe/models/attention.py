"""The encoder-decoder with attention (sequence to sequence, Tx != Ty), plain torch.

The `Encoder` of nets.py reads the source (any cell, stacked, bidirectional). A bridge turns its final states (the
last valid step of the forward direction, the first of the backward one) into the decoder's initial state. The
decoder is a stacked RNN/GRU/LSTM over target embeddings; after each step its top output queries the encoder
outputs (global attention, Luong et al. 2015) with an additive score (Bahdanau et al. 2015, `bahdanau`) or a
bilinear one (Luong's "general", `luong`). The context and the decoder output make the attentional state
h~ = tanh(W [c; h]), which predicts the next token and, with input feeding, is fed to the next step beside the
embedding. Padded source positions get no attention.

Training feeds the true previous token (teacher forcing) with probability `teacher_forcing`, else the model's own
previous prediction (scheduled sampling, Bengio et al. 2015). Decoding (greedy, sampling, beam) goes through
`start`, `step` and `select`, the contract of seqpipe.models.decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqpipe.data.vocab import BOS_ID, PAD_ID
from seqpipe.models.nets import CELLS, Encoder, _mask

ATTENTIONS = ("bahdanau", "luong")


class Attention(nn.Module):
    """Weights over the source positions for a query: softmax of score(query, key), padding masked."""

    def __init__(self, kind: str, query_size: int, key_size: int):
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"attention={kind!r} is not one of {', '.join(ATTENTIONS)}")
        self.kind = kind
        if kind == "bahdanau":  # v^T tanh(W_q q + W_k k)
            self.w_key = nn.Linear(key_size, query_size, bias=False)
            self.w_query = nn.Linear(query_size, query_size)
            self.v = nn.Linear(query_size, 1, bias=False)
        else:                   # q^T W k
            self.w_key = nn.Linear(key_size, query_size, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """The keys' projection, computed once per source: (B, S, D) -> (B, S, Q)."""
        return self.w_key(memory)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, Q), keys (B, S, Q), memory (B, S, D), mask (B, S) true where valid -> context (B, D),
        weights (B, S) that sum to 1 over the valid positions."""
        if self.kind == "bahdanau":
            scores = self.v(torch.tanh(keys + self.w_query(query).unsqueeze(1))).squeeze(-1)  # (B, S)
        else:
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)                         # (B, S)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights


@dataclass
class DecoderState:
    """What one decoding step needs; every tensor has the batch (or beam) rows on dim 0, except `rnn` (layers first,
    as torch's RNNs keep it)."""
    memory: Tensor      # (N, S, D) encoder outputs
    keys: Tensor        # (N, S, Q) their projection for attention
    mask: Tensor        # (N, S) valid source positions
    rnn: Tensor | tuple[Tensor, Tensor]  # (L, N, H), or (h, c) for an LSTM
    feed: Tensor        # (N, H) the previous attentional state (input feeding)
    weights: Tensor     # (N, S) the attention of the last step

    def select(self, rows: Tensor) -> DecoderState:
        rnn = tuple(s[:, rows] for s in self.rnn) if isinstance(self.rnn, tuple) else self.rnn[:, rows]
        return DecoderState(self.memory[rows], self.keys[rows], self.mask[rows], rnn,  # type: ignore[arg-type]
                            self.feed[rows], self.weights[rows])


class Seq2Seq(nn.Module):
    """Encoder -> bridge -> attentional decoder over a target vocabulary of `target_size` tokens."""

    def __init__(self, inputs: int | dict, target_size: int, cell: str = "lstm", embedding_dim: int = 64,
                 hidden_size: int = 256, num_layers: int = 1, dropout: float = 0.0, nonlinearity: str = "tanh",
                 bidirectional: bool = False, packed: bool = False, attention: str = "bahdanau",
                 input_feeding: bool = True, **ignored: object):
        super().__init__()
        self.encoder = Encoder(inputs, cell, embedding_dim, hidden_size, num_layers, dropout, nonlinearity,
                               bidirectional, packed)
        D, H = self.encoder.output_size, hidden_size
        self.cell, self.num_layers, self.hidden_size, self.input_feeding = cell, num_layers, H, input_feeding
        self.bridge = nn.Linear(D, num_layers * H * (2 if cell.startswith("lstm") else 1))  # (h, c) for lstm, lstm_ref
        self.embedding = nn.Embedding(target_size, embedding_dim, padding_idx=PAD_ID)
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = CELLS[cell](embedding_dim + (H if input_feeding else 0), H, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0, **extra)
        self.attention = Attention(attention, H, D)
        self.combine = nn.Linear(D + H, H)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(H, target_size)
        self.teacher_forcing = 1.0  # set during training by the task's schedule; 1 = always the true token

    def start(self, x: Tensor, lengths: Tensor | None = None) -> DecoderState:
        """Encode the source (B, S) and make the decoder's initial state."""
        if lengths is None:
            lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        memory, _ = self.encoder(x, lengths)                               # (B, S, D)
        B, D = memory.size(0), memory.size(-1)
        last = memory[torch.arange(B, device=x.device), lengths.to(x.device) - 1]  # forward direction's last step
        if self.encoder.bidirectional:
            last = torch.cat([last[:, : D // 2], memory[:, 0, D // 2:]], dim=-1)  # backward direction ends at 0
        init = torch.tanh(self.bridge(last)).view(B, -1, self.num_layers, self.hidden_size).permute(1, 2, 0, 3)
        rnn = (init[0].contiguous(), init[1].contiguous()) if self.cell.startswith("lstm") \
            else init[0].contiguous()
        mask = _mask(lengths.to(x.device), x.size(1))                    # (B, S)
        zeros = memory.new_zeros((B, self.hidden_size))
        return DecoderState(memory, self.attention.keys(memory), mask, rnn, zeros, mask.float() / lengths.view(-1, 1))

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One decoder step: tokens (N,) -> next-token logits (N, V) and the new state."""
        emb = self.drop(self.embedding(tokens))                            # (N, E)
        inp = torch.cat([emb, state.feed], dim=-1) if self.input_feeding else emb
        out, rnn = self.rnn(inp.unsqueeze(1), state.rnn)                   # (N, 1, H)
        query = out.squeeze(1)
        context, weights = self.attention(query, state.keys, state.memory, state.mask)  # (N, D), (N, S)
        feed = torch.tanh(self.combine(torch.cat([context, query], dim=-1)))  # (N, H) attentional state
        logits = self.head(self.drop(feed))                                 # (N, V)
        return logits, DecoderState(state.memory, state.keys, state.mask, rnn, feed, weights)

    @staticmethod
    def select(state: DecoderState, rows: Tensor) -> DecoderState:
        return state.select(rows)

    def forward(self, x: Tensor, lengths: Tensor | None = None, y_in: Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Teacher-forced decoding of `y_in` (B, T) (<bos> then the target's tokens): logits (B, T, V) and the
        attention weights (B, T, S). With `teacher_forcing` < 1 (training), each step's input is, per row, the true
        token with that probability, else the previous step's argmax."""
        if y_in is None:
            raise ValueError("Seq2Seq.forward needs the decoder input y_in (<bos> then the target tokens)")
        state = self.start(x, lengths)
        logits, weights = [], []
        tokens = y_in[:, 0]
        for t in range(y_in.size(1)):
            out, state = self.step(tokens, state)
            logits.append(out)
            weights.append(state.weights)
            if t + 1 < y_in.size(1):
                tokens = y_in[:, t + 1]
                if self.training and self.teacher_forcing < 1.0:
                    own = torch.rand(tokens.shape, device=tokens.device, generator=generator) >= self.teacher_forcing
                    tokens = torch.where(own & (tokens != PAD_ID), out.argmax(-1), tokens)
        return torch.stack(logits, 1), torch.stack(weights, 1)

    def bos(self, n: int, device: torch.device | None = None) -> Tensor:
        return torch.full((n,), BOS_ID, dtype=torch.long, device=device)
