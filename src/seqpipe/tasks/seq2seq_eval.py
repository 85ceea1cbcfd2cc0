"""Sequence to sequence at test time and when served: batched decoding of token sequences (beam search, greedy or
sampling, through seqpipe.models.decoding), scores against every reference of an input (exact match, token and sequence
error rates, BLEU), an attention heatmap, and the served model's answer."""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig
from torch.nn.utils.rnn import pad_sequence

from seqpipe.atomic import atomic_path, write_text
from seqpipe.data.requests import InputError, texts_from
from seqpipe.data.sampling_bounds import check_seed, check_temperature
from seqpipe.data.text_tokens import load_tokenizer
from seqpipe.data.vocab import EOS_ID, PAD_ID, SUPPRESS, Vocab
from seqpipe.metrics.text import bleu, error_rates, folded_tokens
from seqpipe.models.attention import DecoderState
from seqpipe.models.decoding import Hypothesis, beam_search, generator, greedy, sample
from seqpipe.tasks.base import test_scores

# The served model's options; beam_width, length_penalty and max_output_len default to what the model was evaluated
# with (evaluate.* when it was registered). temperature > 0 samples (with top_k and seed) instead of searching.
DECODE_PARAMS = {"beam_width": 0, "n_best": 1, "length_penalty": -1.0, "max_output_len": 0, "temperature": 0.0,
                 "top_k": 0, "seed": -1}


def max_output_len(configured: int | None, meta: dict) -> int:
    """The decoding limit: as configured, else twice the longest train output plus 5."""
    return int(configured) if configured else 2 * int(meta["target"]["longest"]) + 5


@torch.no_grad()
def decode(net: torch.nn.Module, xs: Sequence[torch.Tensor], width: int = 1, max_len: int = 50, alpha: float = 1.0,
           n_best: int = 1, attention: bool = False, temperature: float = 0.0, top_k: int = 0,
           seed: int | None = None, batch_size: int = 64) -> list[list[Hypothesis]]:
    """The best `n_best` outputs of every source `xs[i]` (token ids), best first: beam search for width > 1, greedy
    for width 1, sampling for temperature > 0. Sources are decoded in batches of similar lengths."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    gen = generator(seed, device)

    def weights(state: DecoderState) -> torch.Tensor:
        return state.weights  # (N, S): the attention of the step that gave the current logits

    order = sorted(range(len(xs)), key=lambda i: len(xs[i]))
    out: list[list[Hypothesis]] = [[] for _ in xs]
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            x = pad_sequence([xs[i] for i in rows], batch_first=True, padding_value=PAD_ID).to(device)
            lengths = torch.tensor([len(xs[i]) for i in rows], device=device)
            logits, state = net.step(net.bos(len(rows), device), net.start(x, lengths))
            if temperature > 0:
                found = _sampled(net, logits, state, max_len, temperature, top_k, gen)
            elif width == 1 and n_best == 1:
                found = [[h] for h in greedy(net.step, logits, state, max_len, EOS_ID, SUPPRESS,
                                             weights if attention else None)]
            else:
                found = beam_search(net.step, net.select, logits, state, width, max_len, EOS_ID, alpha, n_best,
                                    SUPPRESS, weights if attention else None)
            for i, hyps in zip(rows, found):
                for h in hyps:  # attention rows over the source's own positions only
                    h.attention = [a[: len(xs[i])].cpu() for a in h.attention]
                out[i] = hyps
    finally:
        net.train(was_training)
    return out


def _sampled(net: torch.nn.Module, logits: torch.Tensor, state: object, max_len: int, temperature: float,
             top_k: int, generator: torch.Generator) -> list[list[Hypothesis]]:

    n = logits.size(0)
    tokens: list[list[int]] = [[] for _ in range(n)]
    logps: list[list[float]] = [[] for _ in range(n)]
    ended = [False] * n
    for nxt, lp in sample(net.step, logits, state, max_len, temperature, top_k, generator, EOS_ID, SUPPRESS):
        for i in range(n):
            if not ended[i]:
                logps[i].append(float(lp[i]))
                if int(nxt[i]) == EOS_ID:
                    ended[i] = True
                else:
                    tokens[i].append(int(nxt[i]))
    return [[Hypothesis(tokens[i], logps[i], sum(logps[i]), ended[i])] for i in range(n)]


# --- evaluate ------------------------------------------------------------------------------------------------------
def test_sources(dm: object) -> tuple[list[torch.Tensor], list[list[list[int]]]]:
    """The test split's distinct sources, each with all of its references (the outputs it has in the split)."""
    dm.setup("test")  # type: ignore[attr-defined]
    ds = dm.splits["test"]  # type: ignore[attr-defined]
    refs: dict[tuple, list[list[int]]] = {}
    for i in range(len(ds)):
        x, y = ds[i]
        refs.setdefault(tuple(x.tolist()), []).append(y.tolist())
    return [torch.tensor(k) for k in refs], list(refs.values())


def evaluate_seq2seq(cfg: DictConfig, module: object, dm: object, out_dir: Path) -> dict:
    """Teacher-forced test loss; then the test sources decoded (evaluate.beam_width, and greedy for comparison)
    and scored; predictions.tsv and attention.png in out_dir."""
    scores = test_scores(cfg, module, dm)
    meta, e = dm.meta, cfg.evaluate  # type: ignore[attr-defined]
    net = module.net.cpu()  # type: ignore[attr-defined]
    src_vocab, tgt_vocab = dm.vocab, Vocab(meta["target"]["tokens"], meta["target"]["tokenizer"])  # type: ignore
    src_tok, tgt_tok = load_tokenizer(src_vocab.tokenizer), load_tokenizer(tgt_vocab.tokenizer)
    xs, refs = test_sources(dm)
    limit = max_output_len(e.max_output_len, meta)
    widths = sorted({e.beam_width, 1}, reverse=True)  # the configured width first, greedy for comparison
    metrics: dict[str, float] = {"test/loss": float(scores["test/loss"]),
                                 "test/token_acc": float(scores.get("test/token_acc", float("nan")))}
    names = dict(cfg.recipe.get("metric_names") or {})  # e.g. g2p: seq_error_rate -> wer, token_error_rate -> per
    fold = e.fold  # e.g. g2p: also scored with the stress digits removed, as its anchors score
    if fold:  # the references folded once, for every width
        folded_refs = [[folded_tokens(tgt_vocab.decode(r), fold.remove) for r in rs] for rs in refs]
        names |= {f"{key}{fold.suffix}": f"{name}{fold.suffix}" for key, name in names.items()}
    found: dict[int, list[list[Hypothesis]]] = {}
    for width in widths:
        print(f"evaluate: decoding {len(xs):,} test inputs, beam width {width}", file=sys.stderr)
        found[width] = decode(net, xs, width, limit, e.length_penalty, attention=False)
        best = [h[0] for h in found[width]]
        rates = error_rates([h.tokens for h in best], refs)
        if fold:
            folded = error_rates([folded_tokens(tgt_vocab.decode(h.tokens), fold.remove) for h in best], folded_refs)
            rates |= {f"{key}{fold.suffix}": value for key, value in folded.items()}
        rates["bleu"] = bleu([tgt_tok.detokenize(tgt_vocab.decode(h.tokens)) for h in best],
                             [[tgt_tok.detokenize(tgt_vocab.decode(r)) for r in rs] for rs in refs])
        rates["unfinished"] = float(np.mean([not h.finished for h in best]))
        suffix = "" if width == e.beam_width else "_greedy"
        for key, value in rates.items():
            metrics[f"test/{key}{suffix}"] = value
            if key in names:
                metrics[f"test/{names[key]}{suffix}"] = value
    best = [h[0] for h in found[e.beam_width]]
    lines = ["source\tprediction\treferences\tcorrect\tfinished\tlogprob"]
    for x, h, rs in zip(xs, best, refs):
        shown = [src_tok.detokenize(src_vocab.decode(x.tolist())),
                 tgt_tok.detokenize(tgt_vocab.decode(h.tokens)),
                 " | ".join(tgt_tok.detokenize(tgt_vocab.decode(r)) for r in rs)]
        lines.append("\t".join(s.replace("\t", " ") for s in shown) +
                     f"\t{any(h.tokens == r for r in rs)}\t{h.finished}\t{h.logprob:.4f}")
    write_text(out_dir / "predictions.tsv", "\n".join(lines) + "\n")
    shown_xs = xs[:: max(1, len(xs) // 4)][:4]
    with_attention = decode(net, shown_xs, 1, limit, attention=True)
    plot_attention([src_tok.tokenize(src_tok.detokenize(src_vocab.decode(x.tolist()))) for x in shown_xs],
                   [[*tgt_vocab.decode(h[0].tokens), *(["<eos>"] if h[0].finished else [])] for h in with_attention],
                   [h[0].attention for h in with_attention], out_dir / "attention.png")
    return metrics


def plot_attention(sources: list[list[str]], outputs: list[list[str]], weights: list[list[torch.Tensor]],
                   out_png: Path) -> None:
    """One heatmap per example: output steps (rows) over source tokens (columns)."""
    n = max(len(sources), 1)
    fig = Figure(figsize=(4 * n, 4))
    axes = fig.subplots(1, n, squeeze=False)
    for ax, src, out, w in zip(axes[0], sources, outputs, weights):
        grid = torch.stack(w).numpy() if w else np.zeros((1, len(src)))
        ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(src)), [s if s.strip() else "␣" for s in src], fontsize=7,
                      rotation=90 if max(map(len, src), default=1) > 1 else 0)
        ax.set_yticks(range(len(out)), out, fontsize=7)
        ax.set_xlabel("source")
    axes[0][0].set_ylabel("output")
    fig.suptitle("attention (greedy decoding)")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


# --- serving -------------------------------------------------------------------------------------------------------
def decode_params(params: dict | None, model: object) -> dict:
    """The request's decoding options with the model's defaults, checked against their ranges and its limits."""
    defaults = getattr(model, "decode", {}) or {}
    p = {**DECODE_PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
    if unknown := sorted(set(p) - set(DECODE_PARAMS)):
        raise InputError(f"unknown params {unknown}; this model takes: {', '.join(DECODE_PARAMS)}")
    for key in ("beam_width", "n_best", "max_output_len", "top_k", "seed"):
        if isinstance(p[key], bool) or not isinstance(p[key], int | np.integer):
            raise InputError(f"{key}={p[key]!r} must be an integer")
    for key in ("length_penalty", "temperature"):
        if isinstance(p[key], bool) or not isinstance(p[key], int | float) or not math.isfinite(p[key]):
            raise InputError(f"{key}={p[key]!r} must be a number")
    width = int(p["beam_width"] or defaults.get("beam_width") or 1)
    limit = model.limits  # type: ignore[attr-defined]
    if not 1 <= width <= limit.get("max_beam_width", 16):
        raise InputError(f"beam_width={width} must be between 1 and {limit.get('max_beam_width', 16)} "
                         "(serve.max_beam_width when the model was registered)")
    if not 1 <= p["n_best"] <= width:
        raise InputError(f"n_best={p['n_best']} must be between 1 and beam_width={width}")
    if p["top_k"] < 0:
        raise InputError(f"top_k={p['top_k']} must be >= 0 (0 = all tokens)")
    try:  # the ranges where sampling is defined, as every model that samples checks them
        check_temperature(p["temperature"], zero="beam search")
        check_seed(p["seed"])
    except ValueError as e:
        raise InputError(str(e)) from None
    if p["temperature"] > 0 and p["n_best"] > 1:
        raise InputError("n_best > 1 needs beam search: set temperature=0")
    alpha = p["length_penalty"] if p["length_penalty"] >= 0 else defaults.get("length_penalty", 1.0)
    length = int(p["max_output_len"]) or max_output_len(defaults.get("max_output_len"), model.meta)  # type: ignore
    if not 1 <= length <= limit["max_new_tokens"]:
        raise InputError(f"max_output_len={length} must be between 1 and {limit['max_new_tokens']}, this model's "
                         "limit (serve.max_new_tokens when it was registered)")
    return {"width": width, "n_best": int(p["n_best"]), "alpha": float(alpha), "max_len": length,
            "temperature": float(p["temperature"]), "top_k": int(p["top_k"]), "seed": int(p["seed"])}


def serve(model: object, model_input: object, params: dict | None) -> list[dict]:
    """Every input string's best output (with its log-probability, whether it ended with <eos>, the share of its
    tokens the source vocabulary does not know) and its n-best list as JSON [[output, score], ...]."""
    p = decode_params(params, model)
    xs, unk = model.encode(model_input, "translate")  # type: ignore[attr-defined]
    texts = model.tokenize(texts_from(model_input, model.column))  # type: ignore[attr-defined]
    for i, tokens in enumerate(texts):
        if unknown := sorted(set(model.vocab.unknown(tokens))):  # type: ignore[attr-defined]
            warnings.warn(f"row {i}: not in the source vocabulary, read as <unk>: {unknown!r}", stacklevel=3)
    def run(rows: list) -> list:
        return decode(model.net, rows, p["width"], p["max_len"], p["alpha"], p["n_best"],  # type: ignore[attr-defined]
                      temperature=p["temperature"], top_k=p["top_k"], seed=p["seed"])

    # sampled rows draw from one seeded stream per request, so only deterministic decoding is shared with others
    found = model.rows(("seq2seq", p["width"], p["max_len"], p["alpha"], p["n_best"]), run, xs) \
        if p["temperature"] <= 0 else run(xs)  # type: ignore[attr-defined]
    vocab, tok = model.state["target_vocab"], model.state["target_tokenizer"]  # type: ignore[attr-defined]
    rows = []
    for i, hyps in enumerate(found):
        texts = [tok.detokenize(vocab.decode(h.tokens)) for h in hyps]
        if not hyps[0].finished:
            warnings.warn(f"row {i}: the output reached max_output_len={p['max_len']} tokens without <eos>; it is cut "
                          "there (complete=false)", stacklevel=3)
        rows.append({"output": texts[0], "score": hyps[0].logprob, "complete": hyps[0].finished,
                     "unk_fraction": unk[i] if unk else 0.0,
                     "n_best": json.dumps([[t, round(h.logprob, 4)] for t, h in zip(texts, hyps)])})
    return rows
