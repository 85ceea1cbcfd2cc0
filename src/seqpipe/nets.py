"""Plain torch networks. One contract for every task: `forward(x, state=None) -> (logits, state)`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqpipe.vocab import PAD_ID

State = Tensor | tuple[Tensor, Tensor] | None
CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def detach_state(state: State) -> State:
    """Cut the graph at a chunk boundary (truncated BPTT) while keeping the values."""
    if state is None:
        return None
    if isinstance(state, tuple):  # LSTM: (h, c)
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


class RecurrentLM(nn.Module):
    """Embedding -> stacked RNN/GRU/LSTM -> linear layer over the vocabulary (next-token logits)."""

    def __init__(self, vocab_size: int, cell: str = "lstm", embedding_dim: int = 64, hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.0, nonlinearity: str = "tanh",
                 tie_weights: bool = False):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell={cell!r} is not one of {', '.join(CELLS)}")
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.rnn = CELLS[cell](embedding_dim, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0, **extra)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            if embedding_dim != hidden_size:
                raise ValueError("tie_weights needs embedding_dim == hidden_size")
            # Input and output embeddings share one matrix (Press & Wolf 2017): fewer parameters, often lower loss.
            self.head.weight = self.embedding.weight

    def forward(self, x: Tensor, state: State = None) -> tuple[Tensor, State]:
        emb = self.drop(self.embedding(x))  # (B, T, E)
        out, state = self.rnn(emb, state)   # (B, T, H)
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, state

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, stop_id: int | None = None,
                 suppress: tuple[int, ...] = ()) -> Tensor:
        """Sample `max_new_tokens` after the prompt `ids` (B, T0); returns only the new ids (B, N).
        Ids in `suppress` are never sampled; sampling stops early once every row has produced `stop_id`."""
        logits, state = self(ids)  # the prompt in one pass, then one token at a time
        logits = logits[:, -1]     # (B, V)
        new = []
        for _ in range(max_new_tokens):
            if suppress:
                logits = logits.index_fill(-1, torch.tensor(suppress, device=logits.device), float("-inf"))
            if temperature <= 0:  # greedy
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k and top_k < logits.size(-1):
                    kth = torch.topk(logits, top_k).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)  # (B, 1)
            new.append(nxt)
            if stop_id is not None and bool((nxt == stop_id).all()):
                break
            logits, state = self(nxt, state)
            logits = logits[:, -1]
        return torch.cat(new, dim=1) if new else ids.new_empty((ids.size(0), 0))


def build_net(vocab_size: int, **model: object) -> RecurrentLM:
    """The network a `model` config section describes."""
    return RecurrentLM(vocab_size, **model)  # type: ignore[arg-type]
