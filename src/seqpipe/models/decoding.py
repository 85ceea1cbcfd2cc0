"""Decoding, shared by every network that emits tokens one at a time: the language model's text generation and the
encoder-decoder's output. A network takes part through two functions:

- `step(tokens (N,), state) -> (logits (N, V), state)`: feed one token per row, get the next token's logits;
- `select(state, rows (M,)) -> state`: the state of the given rows (beam search copies and reorders rows).

Greedy decoding and sampling (temperature, top-k, a seeded generator) yield one token per step, so a caller can
show text as it comes; beam search (width, length penalty, n-best) returns scored hypotheses, best first. Every
token comes with its log-probability under the model (temperature 1, nothing suppressed but what is never
allowed), so callers can report per-token and sequence log-probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

StepFn = Callable[[Tensor, object], tuple[Tensor, object]]
SelectFn = Callable[[object, Tensor], object]
NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """One decoded sequence: its tokens (without the stop token), their log-probabilities, the search score (the
    summed log-probability divided by the length penalty), whether it ended with the stop token, and, when the
    network reports it, its attention (one row of weights over the source per output step, the stop step too)."""
    tokens: list[int]
    logprobs: list[float]
    score: float
    finished: bool
    attention: list[Tensor] = field(default_factory=list, repr=False)

    @property
    def logprob(self) -> float:
        return float(sum(self.logprobs))


def generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """The random numbers of one generation: seeded when `seed` >= 0, else freshly seeded (each call differs)."""
    gen = torch.Generator(device=device)
    if seed is not None and seed >= 0:
        gen.manual_seed(seed)
    else:
        gen.seed()
    return gen


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's length penalty ((5 + length) / 6) ** alpha (Wu et al. 2016): alpha 0 ranks by summed log-probability,
    which favours short outputs; larger alpha favours longer ones."""
    return ((5 + length) / 6) ** alpha


def _masked(logits: Tensor, suppress: tuple[int, ...]) -> Tensor:
    if not suppress:
        return logits
    return logits.index_fill(-1, torch.tensor(suppress, device=logits.device), NEG_INF)


def sample(step: StepFn, logits: Tensor, state: object, max_new_tokens: int, temperature: float = 1.0,
           top_k: int = 0, generator: torch.Generator | None = None, stop_id: int | None = None,
           suppress: tuple[int, ...] = ()) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield up to `max_new_tokens` (token ids (N,), their log-probabilities (N,)) from the first step's `logits`
    (N, V) on, feeding each token back through `step`. Temperature 0 is greedy (argmax); otherwise the logits are
    divided by the temperature and, with `top_k`, cut to the k most likely tokens before drawing. Ids in `suppress`
    are never chosen; decoding stops early once every row has produced `stop_id` (rows that stopped keep getting
    tokens, which callers ignore)."""
    done = None
    for _ in range(max_new_tokens):
        logits = _masked(logits, suppress)
        logprobs = torch.log_softmax(logits.float(), -1)  # (N, V), under the model (temperature 1)
        if temperature <= 0:
            nxt = logits.argmax(-1)  # (N,)
        else:
            logits = logits / temperature
            if top_k and top_k < logits.size(-1):
                kth = torch.topk(logits, top_k).values[:, -1:]
                logits = logits.masked_fill(logits < kth, NEG_INF)
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)  # (N,)
        yield nxt, logprobs.gather(1, nxt.unsqueeze(1)).squeeze(1)
        if stop_id is not None:
            done = (nxt == stop_id) if done is None else done | (nxt == stop_id)
            if bool(done.all()):
                return
        logits, state = step(nxt, state)


def greedy(step: StepFn, logits: Tensor, state: object, max_len: int, stop_id: int,
           suppress: tuple[int, ...] = (), attention: Callable[[object], Tensor] | None = None) -> list[Hypothesis]:
    """The most likely token at every step, per row, until `stop_id` or `max_len` tokens. `attention(state)`, when
    given, returns the weights (N, S) the step that produced the current logits used."""
    n = logits.size(0)
    tokens: list[list[int]] = [[] for _ in range(n)]
    logps: list[list[float]] = [[] for _ in range(n)]
    attn: list[list[Tensor]] = [[] for _ in range(n)]
    finished = [False] * n
    for _ in range(max_len):
        weights = attention(state) if attention else None
        logits = _masked(logits, suppress)
        logprobs = torch.log_softmax(logits.float(), -1)
        best, nxt = logprobs.max(-1)  # (N,), (N,)
        for i in range(n):
            if finished[i]:
                continue
            if weights is not None:
                attn[i].append(weights[i])
            if int(nxt[i]) == stop_id:
                finished[i] = True
                logps[i].append(float(best[i]))  # the stop token's log-probability counts in the score
            else:
                tokens[i].append(int(nxt[i]))
                logps[i].append(float(best[i]))
        if all(finished):
            break
        logits, state = step(nxt, state)
    return [Hypothesis(tokens[i], logps[i], sum(logps[i]), finished[i], attn[i]) for i in range(n)]


def beam_search(step: StepFn, select: SelectFn, logits: Tensor, state: object, width: int, max_len: int,
                stop_id: int, alpha: float = 1.0, n_best: int = 1, suppress: tuple[int, ...] = (),
                attention: Callable[[object], Tensor] | None = None) -> list[list[Hypothesis]]:
    """Beam search over a batch: for every row the `n_best` best hypotheses, best first, by summed log-probability
    over `length_penalty(length, alpha)`. Each step keeps the `width` best continuations that do not stop; a
    continuation that stops among the `width` best is set aside as finished. A row is done when it has `width`
    finished hypotheses; hypotheses still open at `max_len` tokens are added unfinished (no stop token). Width 1
    gives exactly greedy decoding."""
    if width < 1 or not 1 <= n_best <= width:
        raise ValueError(f"beam width {width} and n_best {n_best}: need 1 <= n_best <= width")
    B, V = logits.shape
    W = width
    rows = torch.arange(B, device=logits.device).repeat_interleave(W)  # (B*W,) each row's beams, side by side
    state = select(state, rows)
    logits = logits[rows]                                                 # (B*W, V)
    scores = torch.full((B, W), NEG_INF, device=logits.device)
    scores[:, 0] = 0.0  # all beams start equal: only the first may expand, or the first step would pick duplicates
    hist = torch.zeros((B * W, 0), dtype=torch.long, device=logits.device)     # tokens so far
    hist_lp = torch.zeros((B * W, 0), device=logits.device)                   # their log-probabilities
    hist_attn: list[Tensor] = []  # per step (B*W, S), reordered with the beams
    done: list[list[Hypothesis]] = [[] for _ in range(B)]
    closed = [False] * B

    def attn_of(beam: int, t: int, extra: Tensor | None = None) -> list[Tensor]:
        # attention rows of beam `beam` for its first t steps (history already reordered), plus the last step's
        rows_ = [a[beam] for a in hist_attn[:t]]
        return rows_ + ([extra] if extra is not None else [])

    for t in range(max_len):
        weights = attention(state) if attention else None  # (B*W, S) for the step that gave `logits`
        logprobs = torch.log_softmax(_masked(logits, suppress).float(), -1)      # (B*W, V)
        cand = (scores.view(B, W, 1) + logprobs.view(B, W, V)).view(B, W * V)
        top, idx = cand.topk(min(2 * W, W * V), dim=-1)                             # (B, 2W)
        beam, tok = idx // V, idx % V                                               # (B, 2W)
        stops = tok == stop_id
        for b in range(B):  # finished hypotheses: stops ranked among the width best
            if closed[b]:
                continue
            for r in range(min(W, top.size(1))):
                if bool(stops[b, r]) and top[b, r] > NEG_INF:
                    src = b * W + int(beam[b, r])
                    lps = hist_lp[src].tolist() + [float(logprobs[src, stop_id])]
                    att = attn_of(src, t, weights[src] if weights is not None else None) if attention else []
                    done[b].append(Hypothesis(hist[src].tolist(), lps, float(top[b, r]) / length_penalty(t, alpha),
                                              True, att))
            if len(done[b]) >= W:
                closed[b] = True
        if all(closed):
            break
        # the W best continuations that do not stop (stable: a stop ranks after every non-stop)
        order = torch.argsort(stops.long() * (2 * W) + torch.arange(top.size(1), device=top.device), dim=-1)[:, :W]
        keep_score = top.gather(1, order)                                           # (B, W)
        keep_beam, keep_tok = beam.gather(1, order), tok.gather(1, order)
        src = (torch.arange(B, device=top.device).unsqueeze(1) * W + keep_beam).view(-1)  # (B*W,)
        closed_rows = torch.tensor(closed, device=top.device).repeat_interleave(W)
        scores = keep_score.masked_fill(closed_rows.view(B, W), NEG_INF)
        nxt = keep_tok.view(-1)
        hist = torch.cat([hist[src], nxt.unsqueeze(1)], dim=1)
        hist_lp = torch.cat([hist_lp[src], logprobs[src, nxt].unsqueeze(1)], dim=1)
        if weights is not None:
            hist_attn = [a[src] for a in hist_attn] + [weights[src]]
        state = select(state, src)
        logits, state = step(nxt, state)
    L = hist.size(1)
    for b in range(B):  # rows that ran out of steps: their open beams, unfinished
        if len(done[b]) < n_best:
            for w in range(W):
                if scores[b, w] > NEG_INF:
                    i = b * W + w
                    att = [a[i] for a in hist_attn] if attention else []
                    done[b].append(Hypothesis(hist[i].tolist(), hist_lp[i].tolist(),
                                              float(scores[b, w]) / length_penalty(L, alpha), False, att))
        done[b].sort(key=lambda h: h.score, reverse=True)
    return [hyps[:n_best] for hyps in done]
