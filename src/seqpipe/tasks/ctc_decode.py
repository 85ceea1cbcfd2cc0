"""Decoding CTC outputs: per-frame log-probabilities (T, C) over blank (index 0) and the alphabet -> a labelling.
Greedy (the best path: argmax per frame, repeats collapsed, blanks dropped) and prefix beam search (the labellings
whose summed probability over all their alignments is highest, no language model; Hannun et al. 2014). `snap`
puts a character model's words onto a closed vocabulary (the lexicon of the train transcripts)."""

from __future__ import annotations

import math

import numpy as np

from seqpipe.metrics.text import edit_distance

BLANK = 0
NEG_INF = -math.inf


def _add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def greedy(logp: np.ndarray) -> tuple[list[int], float]:
    """The best path's labelling and its log-probability (of that one alignment, not of the labelling)."""
    best = logp.argmax(-1)  # (T,)
    score = float(logp[np.arange(len(best)), best].sum())
    labels, prev = [], BLANK
    for k in best.tolist():
        if k != prev and k != BLANK:
            labels.append(k)
        prev = k
    return labels, score


def prefix_beam_search(logp: np.ndarray, width: int) -> list[tuple[list[int], float]]:
    """The `width` most probable labellings found, best first, each with log P(labelling | frames) summed over the
    alignments that the beam kept. Each prefix carries two sums: its alignments ending in blank and in its last
    label, because a repeated label only extends the prefix after a blank. With a beam as wide as the number of
    prefixes it is exact."""
    beam: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}  # prefix -> (log p_blank, log p_label)
    for frame in logp.tolist():  # (C,) per frame
        blank = frame[BLANK]
        grown: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pl) in beam.items():
            total = _add(pb, pl)
            entry = grown.setdefault(prefix, [NEG_INF, NEG_INF])
            entry[0] = _add(entry[0], total + blank)              # a blank: the prefix stays
            last = prefix[-1] if prefix else None
            for k in range(1, len(frame)):
                p = frame[k]
                if k == last:
                    entry[1] = _add(entry[1], pl + p)              # the same label again: collapsed
                    ext = grown.setdefault(prefix + (k,), [NEG_INF, NEG_INF])
                    ext[1] = _add(ext[1], pb + p)                  # after a blank: a new, repeated label
                else:
                    ext = grown.setdefault(prefix + (k,), [NEG_INF, NEG_INF])
                    ext[1] = _add(ext[1], total + p)
        kept = sorted(grown.items(), key=lambda kv: _add(*kv[1]), reverse=True)[:width]
        beam = {prefix: (pb, pl) for prefix, (pb, pl) in kept}
    ranked = sorted(((list(p), _add(pb, pl)) for p, (pb, pl) in beam.items()), key=lambda h: h[1], reverse=True)
    return ranked


def decode(logp: np.ndarray, width: int) -> tuple[list[int], float]:
    """The best labelling: greedy for width 1, prefix beam search otherwise."""
    return greedy(logp) if width == 1 else prefix_beam_search(logp, width)[0]


def snap(text: str, lexicon: list[str]) -> str:
    """Each word of `text` replaced by the lexicon word nearest to it in edit distance (the earlier word of the
    lexicon, which is sorted by train frequency, on a tie): 'tin f siarts' -> 'ten of hearts'."""
    return " ".join(w if w in lexicon else min(lexicon, key=lambda v: edit_distance(w, v)) for w in text.split())
