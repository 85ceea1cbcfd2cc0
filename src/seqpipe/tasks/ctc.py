"""CTC: frames -> text without an alignment (speech: log-mel frames -> the transcript). A (bidirectional) encoder
over the frames, optionally stacked and subsampled (`ctc.stack`), gives log-probabilities over blank and the
alphabet at every step; the loss sums over all alignments (connectionist temporal classification, Graves et al.
2006). The alphabet (characters, or words with ctc.unit=word) is fitted on the train split; blank is index 0. At
test the outputs are decoded greedily and by prefix beam search (seqpipe.tasks.ctc_decode) and scored with the character
and word error rates; the served model transcribes a `frames` column into `text` with a `score`."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from seqpipe.data.documents import Document
from seqpipe.data.requests import InputError
from seqpipe.errors import SeqpipeError
from seqpipe.models.nets import SequenceTagger
from seqpipe.tasks.base import ExampleTask, Step, evaluated_decoding
from seqpipe.tasks.ctc_decode import greedy, prefix_beam_search, snap
from seqpipe.tasks.ctc_eval import evaluate
from seqpipe.tasks.rules import CTCRules

BLANK = "<blank>"  # index 0 of meta["target"]["tokens"]
# beam_width 0: what evaluate scored it with; n_best > 1: the beam's best labellings with their scores (column
# n_best, JSON); lexicon: each word put onto the nearest word of the train transcripts (char models)
PARAMS = {"beam_width": 0, "n_best": 1, "lexicon": False}


def collate(batch: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Frames padded with 0 (B, T, F) and their lengths; targets padded with blank (B, U) and their lengths."""
    xs, ys = [x.float() for x, _ in batch], [y.long() for _, y in batch]
    return {"x": pad_sequence(xs, batch_first=True), "lengths": torch.tensor([len(x) for x in xs]),
            "y": pad_sequence(ys, batch_first=True, padding_value=0), "y_lengths": torch.tensor([len(y) for y in ys])}


def spec_augment(x: Tensor, rng: np.random.Generator, freq_masks: int = 0, freq_width: int = 0,
                 time_masks: int = 0, time_width: int = 0) -> Tensor:
    """SpecAugment's masks (Park et al. 2019) on one clip's frames (T, F): `freq_masks` bands of up to freq_width
    features and `time_masks` spans of up to time_width frames (each at most a fifth of the clip) set to the clip's
    mean, so the network learns not to rely on any one band or moment."""
    x = x.clone()
    T, F = x.shape
    for _ in range(freq_masks):
        w = int(rng.integers(0, min(freq_width, F) + 1))
        f0 = int(rng.integers(0, F - w + 1))
        x[:, f0:f0 + w] = x[:, f0:f0 + w].mean()
    for _ in range(time_masks):
        w = int(rng.integers(0, min(time_width, T // 5) + 1))
        t0 = int(rng.integers(0, T - w + 1))
        x[t0:t0 + w] = x.mean(0)
    return x


def augmented_collate(batch: list[tuple[Tensor, Tensor]], rng: np.random.Generator, **masks: int) -> dict:
    """`collate` after SpecAugment's masks on each clip (the train split only)."""
    return collate([(spec_augment(x.float(), rng, **masks), y) for x, y in batch])


def frames_needed(target: list[int]) -> int:
    """The fewest steps a CTC alignment of `target` takes: one per label, plus a blank between repeated labels."""
    return len(target) + sum(a == b for a, b in zip(target, target[1:]))


class CTCNet(nn.Module):
    """Frames (B, T, F) -> stacked (B, ceil(T / k), k F) -> Encoder -> logits over blank and the alphabet per step."""

    def __init__(self, inputs: dict, num_classes: int, stack: int = 1, **encoder: object):
        super().__init__()
        self.stack = stack
        # the stacked frame is k frames side by side: their standardisation is the frame's, k times over
        stacked = {**inputs, "features": inputs["features"] * stack,
                   **{k: list(inputs[k]) * stack for k in ("mean", "std") if inputs.get(k) is not None}}
        self.tagger = SequenceTagger(stacked, num_classes, **encoder)

    def out_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(lengths + self.stack - 1, self.stack, rounding_mode="floor")

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: object = None) -> tuple[Tensor, None]:
        B, T, Fe = x.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        if self.stack > 1:  # each row's tail is filled with its own last frame, so padding changes nothing
            steps = (T + self.stack - 1) // self.stack
            idx = torch.arange(steps * self.stack, device=x.device).unsqueeze(0)          # (1, T' k)
            idx = torch.minimum(idx, (lengths.to(x.device) - 1).unsqueeze(1))             # (B, T' k)
            x = x.gather(1, idx.unsqueeze(-1).expand(B, -1, Fe)).reshape(B, steps, self.stack * Fe)
        logits, _ = self.tagger(x, self.out_lengths(lengths))                              # (B, T', C)
        return logits, None

    @torch.no_grad()
    def log_probs(self, xs: list[Tensor], batch_size: int = 64) -> list[np.ndarray]:
        """Each input's per-step log-probabilities (T'_i, C)."""
        out = []
        for start in range(0, len(xs), batch_size):
            chunk = xs[start:start + batch_size]
            batch = collate([(x, torch.zeros(0)) for x in chunk])
            lp = torch.log_softmax(self(batch["x"], batch["lengths"])[0].float(), -1)
            out += [lp[i, :n].numpy() for i, n in enumerate(self.out_lengths(batch["lengths"]).tolist())]
        return out


class CTC(CTCRules, ExampleTask):
    # name, inputs, carries_state, section, trained_by, check(cfg): its config rules (seqpipe.tasks.rules)
    key = "output"
    stratify = False
    params = PARAMS

    # --- prepare: the alphabet from the train split -----------------------------------------------------------------
    def target_meta(self, cfg: DictConfig, docs: list[Document]) -> dict:
        return {"unit": cfg.ctc.unit, "stack": cfg.ctc.stack}

    def encode_target(self, doc: Document, target: dict) -> list[str]:
        output = doc.get("output")
        if not isinstance(output, str):
            raise SeqpipeError(f"example {doc['id']!r}: output {output!r} is not a string; fix the data")
        return output.split() if target["unit"] == "word" else list(output)

    def fit_targets(self, cfg: DictConfig, splits: dict[str, list[dict]], target: dict) -> dict:
        """The alphabet from the train split (blank first), every row's output as ids; symbols the train split does
        not have are removed from val/test outputs (counted), and examples with too few frames for their output
        are dropped (counted): CTC needs a step per label plus one between repeats."""
        symbols = sorted({s for r in splits["train"] for s in r["target"]})
        if target["unit"] == "char":  # the train transcripts' words, most frequent first: evaluate's lexicon
            words = Counter(w for r in splits["train"] for w in "".join(r["target"]).split())
            target["lexicon"] = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))]
        index = {s: i for i, s in enumerate([BLANK, *symbols])}
        target["tokens"] = [BLANK, *symbols]
        stats = {"target_vocab_size": len(index), "dropped_short": 0}
        for name, rows in splits.items():
            unseen = sum(s not in index for r in rows for s in r["target"])
            kept = []
            for r in rows:
                r["target"] = [index[s] for s in r["target"] if s in index]
                if math.ceil(len(r["x"]) / target["stack"]) < frames_needed(r["target"]):
                    stats["dropped_short"] += 1
                    continue
                kept.append(r)
            if not kept:
                raise SeqpipeError(f"every {name} example has fewer frames than its output needs (after ctc.stack="
                                   f"{target['stack']}): lower ctc.stack or check the data")
            rows[:] = kept
            stats[f"{name}_target_unseen"] = unseen
        print(f"prepare: alphabet of {len(symbols)} {target['unit']}s + blank", file=sys.stderr)
        if stats["dropped_short"]:
            print(f"prepare: dropped {stats['dropped_short']} examples with fewer frames than their output needs "
                  f"(one per {target['unit']}, one more between repeats, after ctc.stack={target['stack']})",
                  file=sys.stderr)
        return stats

    # --- training -----------------------------------------------------------------------------------------------------
    def net_config(self, cfg: DictConfig) -> dict:
        model = {k: v for k, v in cfg.model.items() if k not in ("pooling", "tie_weights")}
        return {**model, "stack": int(cfg.ctc.stack)}

    def collate(self, cfg: DictConfig) -> tuple[object, object]:
        masks = dict(cfg.ctc.spec_augment)
        train_collate = partial(augmented_collate, rng=np.random.default_rng(cfg.seed), **masks) \
            if masks["freq_masks"] or masks["time_masks"] else None
        return collate, train_collate

    def datamodule(self, cfg: DictConfig, meta: dict):  # noqa: ANN201
        if meta["target"]["stack"] != cfg.ctc.stack:  # prepare kept the examples with frames enough for its stack
            raise SeqpipeError(f"{cfg.paths.prepared} was prepared with ctc.stack={meta['target']['stack']}, but the "
                               f"config says ctc.stack={cfg.ctc.stack}: run the prepare stage again (`dvc repro "
                               "prepare`)")
        return super().datamodule(cfg, meta)

    def build_net(self, meta: dict, model: dict) -> CTCNet:
        return CTCNet(meta["inputs"], len(meta["target"]["tokens"]), **model)

    def step(self, net, batch, state) -> Step:  # noqa: ANN001
        logits, _ = net(batch["x"], batch["lengths"])                    # (B, T', C)
        logp = torch.log_softmax(logits.float(), -1).transpose(0, 1)     # (T', B, C), as ctc_loss wants
        tokens = int(batch["y_lengths"].sum())
        # summed over the batch, then per target label: a long transcript weighs as much as its labels
        loss = F.ctc_loss(logp, batch["y"], net.out_lengths(batch["lengths"]), batch["y_lengths"], blank=0,
                          reduction="sum", zero_infinity=True) / max(tokens, 1)
        return Step(loss, tokens)

    # --- test and serving ---------------------------------------------------------------------------------------------
    def evaluate(self, cfg: DictConfig, module, dm, out_dir: Path) -> dict:  # noqa: ANN001
        return evaluate(cfg, module, dm, out_dir, self.text(dm.meta))

    def decoding(self, cfg: DictConfig) -> dict:
        return evaluated_decoding(cfg)

    @staticmethod
    def text(meta: dict):  # noqa: ANN205
        """ids -> the output string (characters joined, or words joined with spaces)."""
        tokens, sep = meta["target"]["tokens"], " " if meta["target"]["unit"] == "word" else ""
        return lambda ids: sep.join(tokens[i] for i in ids)

    def output_example(self, meta: dict) -> dict:
        return {"text": ["x"], "score": [-0.5]}

    def predict(self, model, model_input, params) -> list[dict]:  # noqa: ANN001
        p = {**PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
        if unknown := sorted(set(p) - set(PARAMS)):
            raise InputError(f"unknown params {unknown}; this model takes: {', '.join(PARAMS)}")
        for key in ("beam_width", "n_best"):
            if isinstance(p[key], bool) or not isinstance(p[key], int | np.integer):
                raise InputError(f"{key}={p[key]!r} must be an integer")
        if not isinstance(p["lexicon"], bool | np.bool_):
            raise InputError(f"lexicon={p['lexicon']!r} must be true or false")
        lexicon = model.meta["target"].get("lexicon") if p["lexicon"] else None
        if p["lexicon"] and not lexicon:
            raise InputError("lexicon=true needs a model of characters trained with a seqpipe that keeps its "
                             "lexicon (ctc.unit=char); this one has none")
        width, n_best = int(p["beam_width"] or model.decode.get("beam_width") or 1), int(p["n_best"])
        if not 1 <= width <= (top := model.limits.get("max_beam_width", 16)):
            raise InputError(f"beam_width={width} must be between 1 and {top} (serve.max_beam_width when the model "
                             "was registered)")
        if not 1 <= n_best <= width:
            raise InputError(f"n_best={n_best} must be between 1 and beam_width={width}")
        xs, _ = model.encode(model_input, "transcribe")
        spelt = self.text(model.meta)
        text = (lambda ids: snap(spelt(ids), lexicon)) if lexicon else spelt  # noqa: E731
        heard = [i for i, x in enumerate(xs) if len(x)]  # a silent or empty clip has no frames: nothing was said
        found: list[list[tuple[list[int], float]]] = [[([], 0.0)]] * len(xs)
        for i, answer in zip(heard, model.rows(self.name, model.net.log_probs, [xs[i] for i in heard])):
            found[i] = [greedy(answer)] if width == 1 else prefix_beam_search(answer, width)[:n_best]
        rows = [{"text": text(f[0][0]), "score": f[0][1]} for f in found]
        if n_best > 1:
            for row, f in zip(rows, found):
                row["n_best"] = json.dumps([{"text": text(labels), "score": round(score, 4)} for labels, score in f])
        return rows
