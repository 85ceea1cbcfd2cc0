"""Text metrics shared by seq2seq and ctc: edit distance, error rates against every reference of an input (exact
match, token and sequence error rates; CER and WER of transcripts), tokens folded before scoring (g2p without stress)
and corpus BLEU."""

from __future__ import annotations

import re
from collections.abc import Sequence

import sacrebleu


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two token sequences (insertions, deletions, substitutions cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def error_rates(hyps: Sequence[Sequence], refs: Sequence[Sequence[Sequence]]) -> dict[str, float]:
    """Scores of outputs against all references of their input: `exact_match` (the share of outputs equal to a
    reference), `seq_error_rate` (1 - exact_match: the word error rate of g2p), `token_error_rate` (edit distance to
    the closest reference over that reference's length, summed over inputs: the phoneme error rate of g2p)."""
    exact, dist, length = 0, 0, 0
    for hyp, options in zip(hyps, refs):
        hyp = list(hyp)
        exact += any(hyp == list(r) for r in options)
        d, ref = min((edit_distance(hyp, r), r) for r in options)
        dist, length = dist + d, length + len(ref)
    n = max(len(hyps), 1)
    return {"exact_match": exact / n, "seq_error_rate": 1 - exact / n, "token_error_rate": dist / max(length, 1)}


def folded_tokens(tokens: Sequence[str], remove: str) -> list[str]:
    """Output tokens with the part that matches the regular expression `remove` taken out of each (a token that
    becomes empty is dropped): ["P", "AY1", "P"] with remove="[012]$" is ["P", "AY", "P"]."""
    return [t for t in (re.sub(remove, "", token) for token in tokens) if t]


def error_rates_of(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """CER, WER and exact match of transcripts against one reference each."""
    chars = error_rates([list(h) for h in hyps], [[list(r)] for r in refs])
    words = error_rates([h.split() for h in hyps], [[r.split()] for r in refs])
    return {"cer": chars["token_error_rate"], "wer": words["token_error_rate"], "exact_match": chars["exact_match"]}


def bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu, its default 13a tokenisation) of detokenised outputs against their first
    reference."""
    return float(sacrebleu.corpus_bleu(list(hyps), [[r[0] for r in refs]]).score)
