"""Polyphonic music as piano rolls (one-to-many): each step a multi-hot frame over the pitch range, the next frame
predicted with an independent Bernoulli per pitch (Boulanger-Lewandowski et al. 2012; Chung et al. 2014).

The input is the previous frame, starting from an all-silent start frame (the seed's "input 0"), so a model
generates from nothing or continues a primer. The loss is the negative log-likelihood of a frame in nats (the
binary cross-entropy summed over pitches, averaged over frames): the figure the JSB Chorales papers report. Train
chorales are transposed at random by up to `pianoroll.transpose` semitones each time they are drawn.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from mlflow.models import infer_signature
from omegaconf import DictConfig
from torch import Tensor
from torchmetrics import Metric

from seqpipe.atomic import atomic_path, write_json, write_text
from seqpipe.data.documents import Document
from seqpipe.data.examples import ExampleDataModule, save_examples
from seqpipe.data.meta import META
from seqpipe.data.music import (
    Notes,
    check_steps,
    fit_range,
    frame_count,
    from_roll,
    midi_bytes,
    pitches_of,
    plot_roll,
    read_midi,
    to_roll,
)
from seqpipe.data.request_checks import RequestError
from seqpipe.data.requests import WHO, InputError, column_values
from seqpipe.data.sampling_bounds import check_seed, check_temperature
from seqpipe.data.splits import SPLITS, split_examples
from seqpipe.errors import SeqpipeError
from seqpipe.models.decoding import generator
from seqpipe.models.nets import SequenceTagger
from seqpipe.tasks.base import Step, Task, test_scores
from seqpipe.tasks.rules import PianoRollRules

PARAMS = {"steps": 64, "temperature": 1.0, "seed": -1, "out_of_range": "error"}  # the served model's params


class FrameAccuracy(Metric):
    """Bay et al. (2009)'s frame-level accuracy of the most likely frame (each pitch on when p > 0.5):
    TP / (TP + FP + FN) over all frames and pitches."""

    def __init__(self) -> None:
        super().__init__()
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:  # (N, F) logits and 0/1 targets of valid frames
        on, y = preds > 0, target > 0.5
        self.tp += (on & y).sum()
        self.fp += (on & ~y).sum()
        self.fn += (~on & y).sum()

    def compute(self) -> Tensor:
        return self.tp / (self.tp + self.fp + self.fn).clamp(min=1)


def collate(items: list[tuple[Tensor, Tensor]], transpose: int = 0, rng: np.random.Generator | None = None
            ) -> dict[str, Tensor]:
    """Rolls (T_i, F) -> x: the previous frame at every step, from an all-silent start frame (B, T, F); y: the
    frame (B, T, F); lengths (B,). With `rng`, each roll is first moved by a random shift within +-transpose
    semitones that keeps its notes in range."""
    rolls = [x.float() for x, _ in items]
    if rng is not None and transpose:
        rolls = [shift(r, rng, transpose) for r in rolls]
    lengths = torch.tensor([len(r) for r in rolls], dtype=torch.long)
    B, T, Fn = len(rolls), int(lengths.max()), rolls[0].size(1)
    y = torch.zeros(B, T, Fn)
    for i, r in enumerate(rolls):
        y[i, : len(r)] = r
    x = torch.cat([torch.zeros(B, 1, Fn), y[:, :-1]], dim=1)  # the frame before each step
    return {"x": x, "y": y, "lengths": lengths}


def shift(roll: Tensor, rng: np.random.Generator, transpose: int) -> Tensor:
    """The roll moved up or down by a random number of semitones that keeps every note within the pitch range."""
    used = torch.nonzero(roll.any(0)).flatten()
    if not len(used):
        return roll
    down, up = min(transpose, int(used[0])), min(transpose, roll.size(1) - 1 - int(used[-1]))
    k = int(rng.integers(-down, up + 1))
    return torch.roll(roll, k, dims=1) if k else roll


class PianoRoll(PianoRollRules, Task):
    # name, inputs, carries_state, section, trained_by, check(cfg): its config rules (seqpipe.tasks.rules)
    column = "primer"  # JSON text of frames of MIDI pitches, not the frames the network reads
    command = "generate"
    params = PARAMS

    def prepare(self, cfg: DictConfig, docs: list[Document], raw_file: Path) -> dict:
        p, r = cfg.prepare, cfg.pianoroll
        rows, seen, stats = [], set(), {"dropped_duplicates": 0}
        for d in docs:
            if "notes" not in d:
                raise SeqpipeError(f"{raw_file}: row {d.get('id')!r} has no 'notes' (frames of MIDI pitches); "
                                   "task=pianoroll reads the chorales recipe's rows")
            try:
                roll = to_roll(pitches_of(d["notes"]), r.low, r.high)  # type: ignore[typeddict-item]
            except ValueError as e:
                raise SeqpipeError(f"{raw_file}: row {d['id']!r}: {e}; widen pianoroll.low/high") from None
            if len(roll) < 2:
                raise SeqpipeError(f"{raw_file}: row {d['id']!r} has {len(roll)} frames; a piece needs at least 2")
            if (key := roll.tobytes()) in seen:  # the same harmonisation twice would be in train and test
                stats["dropped_duplicates"] += 1
                continue
            seen.add(key)
            rows.append({"id": d["id"], "x": roll})
        splits = split_examples(rows, p.val_fraction, p.test_fraction, p.split_seed, stratify=False)
        features = r.high - r.low + 1
        # 0/1 inputs are already on one scale, and a transposed note must not meet a pitch's tiny train std
        meta = {"task": self.name, "inputs": {"kind": "frames", "features": features, "mean": [0.0] * features,
                                              "std": [1.0] * features},
                "target": {"low": r.low, "high": r.high, "frame": cfg.recipe.get("fetch", {}).get("frame", 1.0)},
                "sources": [""], "max_len": None}
        with atomic_path(Path(cfg.paths.prepared), is_dir=True) as out:
            for name in SPLITS:
                if not splits[name]:
                    raise SeqpipeError(f"the {name} split is empty ({raw_file}): add pieces or raise "
                                       f"prepare.{name}_fraction")
                xs = [s["x"] for s in splits[name]]
                # no separate target: a piece's target is the piece itself, one frame ahead of its input
                save_examples(out / f"{name}.npz", xs, np.zeros(len(xs), dtype=np.float32),
                              np.zeros(len(xs), dtype=np.int16), np.dtype(np.uint8))
                stats[f"{name}_examples"], stats[f"{name}_frames"] = len(xs), sum(map(len, xs))
            write_json(out / META, meta)
            write_json(out / "splits.json", {name: [s["id"] for s in splits[name]] for name in SPLITS})
        stats["features"] = features
        print(f"prepare: {sum(len(s) for s in splits.values())} pieces ({stats['dropped_duplicates']} duplicates "
              f"dropped), {features} pitches {r.low}..{r.high}, train/val/test frames {stats['train_frames']:,}/"
              f"{stats['val_frames']:,}/{stats['test_frames']:,}", file=sys.stderr)
        return stats

    def datamodule(self, cfg: DictConfig, meta: dict):  # noqa: ANN201
        d = cfg.data
        return ExampleDataModule(cfg.paths.prepared, d.batch_size, d.eval_batch_size, d.bucketing, d.num_workers,
                                 cfg.seed, d.bucket_factor, collate=collate,
                                 train_collate=partial(collate, transpose=cfg.pianoroll.transpose,
                                                       rng=np.random.default_rng(cfg.seed)))

    def build_net(self, meta: dict, model: dict):  # noqa: ANN201
        model = {k: v for k, v in model.items() if k not in ("tie_weights", "pooling")}
        return SequenceTagger(meta["inputs"], meta["inputs"]["features"], **model)

    def step(self, net, batch, state) -> Step:  # noqa: ANN001
        logits, state = net(batch["x"], batch["lengths"], state)  # (B, T, F)
        valid = batch.get("mask")
        if valid is None:
            valid = torch.arange(logits.size(1)).unsqueeze(0) < batch["lengths"].unsqueeze(1)  # (B, T)
        nll = F.binary_cross_entropy_with_logits(logits, batch["y"], reduction="none").sum(-1)  # (B, T) per frame
        return Step(nll[valid].mean(), int(valid.sum()), logits[valid].detach(), batch["y"][valid], state)

    def final_step_only(self, batch: dict) -> dict:
        last = torch.nn.functional.one_hot(batch["lengths"] - 1, batch["x"].size(1)).bool()  # (B, T)
        return {**batch, "mask": last}

    def metrics(self, meta: dict) -> dict[str, Metric]:
        return {"frame_acc": FrameAccuracy()}

    def loss_metrics(self, stage: str, loss: float) -> dict[str, float]:
        return {f"{stage}/bits_per_frame": loss / math.log(2)}

    def evaluate(self, cfg: DictConfig, module, dm, out_dir: Path) -> dict:  # noqa: ANN001
        """Test NLL per frame and frame accuracy; a piece generated from nothing and one continuing the opening
        of a held-out chorale, as MIDI, notes (JSON) and piano-roll pictures."""

        scores = test_scores(cfg, module, dm)
        r, target, net = cfg.pianoroll, dm.meta["target"], module.net.cpu().eval()
        dm.setup("test")
        opening = from_roll(dm.splits["test"][0][0][: r.primer_frames].numpy(), target["low"])
        samples = {"sample": [], "primed": opening}
        for name, primer in samples.items():
            notes = generate(net, target, primer, r.sample_steps, cfg.evaluate.temperature, seed=cfg.seed)
            (out_dir / f"{name}.mid").write_bytes(midi_bytes(notes, target["frame"]))
            write_text(out_dir / f"{name}.json", json.dumps(notes) + "\n")
            what = "from nothing" if not primer else f"continuing the first {len(primer)} frames of a test chorale"
            plot_roll(notes, out_dir / f"{name}.png", f"generated {what}", primer=len(primer))
        print(f"pianoroll: test NLL {scores['test/loss']:.3f} nats per frame, frame accuracy "
              f"{scores['test/frame_acc']:.3f}; samples -> {Path(cfg.paths.reports) / 'evaluate'}/sample.mid and "
              "primed.mid", file=sys.stderr)
        write_json(out_dir / "sample_settings.json", {"steps": r.sample_steps, "primer_frames": r.primer_frames,
                                                      "temperature": cfg.evaluate.temperature, "seed": cfg.seed})
        loss = float(scores["test/loss"])
        return {"test/loss": loss, **self.loss_metrics("test", loss), "test/frame_acc": float(scores["test/frame_acc"])}

    def signature(self, cfg: DictConfig, meta: dict) -> tuple[object, pd.DataFrame]:
        """A primer is JSON text of notes (not the frames the network reads): its own example."""
        example = pd.DataFrame({"primer": [json.dumps([[60, 64, 67]])]})
        output = pd.DataFrame({"notes": ["[[60, 64, 67]]"], "midi_base64": ["TVRoZA=="], **WHO})
        return infer_signature(example, output, params=PARAMS), example

    def predict(self, model, model_input, params) -> list[dict]:  # noqa: ANN001
        p = music_params(params, model.limits)
        values = column_values(model_input, self.column, model.limits)
        for i, value in enumerate(values):
            if value is not None and not isinstance(value, str | list | tuple | np.ndarray):
                raise InputError(f"a primer is JSON text of frames or a list of frames, not {type(value).__name__}; "
                                 "send e.g. [[60, 64, 67], [62, 65]], or \"\" to start from nothing", row=i)
        # the limits first, on frames counted without parsing: a JSON list of 10**7 frames is never built
        model.check_size([range(frame_count(v)) for v in values], p["steps"])
        primers = []
        for i, value in enumerate(values):
            try:
                primers.append(pitches_of(json.loads(value) if isinstance(value, str) and value.strip() else
                                          list(value) if isinstance(value, list | tuple | np.ndarray) else []))
            except (ValueError, json.JSONDecodeError) as e:
                raise InputError(f"{e}; send a JSON list of frames such as [[60, 64, 67], [62, 65]], or \"\" to "
                                 "start from nothing", row=i) from None
        target, rows = model.meta["target"], []
        for primer in primers:
            try:
                primer = fit_range(primer, target["low"], target["high"], p["out_of_range"])
            except SeqpipeError as e:
                raise InputError(str(e)) from None
            notes = generate(model.net, target, primer, p["steps"], p["temperature"], p["seed"])
            rows.append({"notes": json.dumps(notes),
                         "midi_base64": base64.b64encode(midi_bytes(notes, target["frame"])).decode("ascii")})
        return rows


    def run_cli(self, args: argparse.Namespace, model: object) -> None:
        """`seqpipe generate`: frames from nothing or after a primer MIDI file -> a MIDI file (--out), a piano-roll
        PNG beside it, and the notes printed one frame per line."""
        target, limits = model.meta["target"], model.limits  # type: ignore[attr-defined]
        try:  # the served model's checks and limits: what a server refuses, this refuses, before anything is written
            p = music_params({"steps": args.steps, "temperature": args.temperature, "seed": args.seed,
                              "out_of_range": args.out_of_range}, limits)
            out = Path(args.out or "generated.mid")
            if out.suffix.lower() not in (".mid", ".midi"):
                raise SeqpipeError(f"--out {out}: give a .mid file name (a PNG of the piano roll is written beside it)")
            # counted from the notes' times before any frame is made (a tiny file can ask for billions of frames)
            primer = read_midi(args.primer, target["frame"], limits["max_input_tokens"]) if args.primer else []
            model.check_size([primer], p["steps"])  # type: ignore[attr-defined]
        except RequestError as e:  # the reason alone: "row 0" would say nothing here
            raise SeqpipeError(e.reason) from None
        primer = fit_range(primer, target["low"], target["high"], p["out_of_range"])
        steps = p["steps"]
        notes = generate(model.net, target, primer, steps, p["temperature"], p["seed"])  # type: ignore[attr-defined]
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out.with_suffix(".json"), json.dumps(notes) + "\n")
        plot_roll(notes, out.with_suffix(".png"), f"{out.name}: {steps} frames generated", primer=len(primer))
        with atomic_path(out) as tmp:
            tmp.write_bytes(midi_bytes(notes, target["frame"]))
        for frame in notes:
            print(" ".join(map(str, frame)) or "-")
        print(f"generate: {len(primer)} primer + {steps} new frames -> {out} (and {out.with_suffix('.png').name}, "
              f"{out.with_suffix('.json').name})", file=sys.stderr)


def music_params(params: dict | None, limits: dict) -> dict:
    """The served model's params with defaults, checked (steps within the model's limit; temperature and seed
    within the ranges sampling is defined on)."""
    p = {**PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
    if unknown := sorted(set(p) - set(PARAMS)):
        raise InputError(f"unknown params {unknown}; this model takes: {', '.join(PARAMS)}")
    try:
        check_steps(p["steps"], limits["max_new_tokens"])
        temperature = check_temperature(p["temperature"], zero="every pitch with p > 0.5")
        seed = check_seed(p["seed"])
    except (SeqpipeError, ValueError) as e:
        raise InputError(str(e)) from None
    if p["out_of_range"] not in ("error", "clamp"):
        raise InputError(f"out_of_range={p['out_of_range']!r} must be 'error' or 'clamp'")
    return {"steps": int(p["steps"]), "temperature": temperature, "seed": seed, "out_of_range": p["out_of_range"]}


@torch.no_grad()
def generate(net: torch.nn.Module, target: dict, primer: Notes, steps: int, temperature: float = 1.0,
             seed: int = -1) -> Notes:
    """The primer (frames of MIDI pitches, may be empty) followed by `steps` sampled frames: each pitch on with
    probability sigmoid(logit / temperature); temperature 0 turns on every pitch with p > 0.5."""
    low, high = target["low"], target["high"]
    gen = generator(seed, next(net.parameters()).device)
    roll = torch.from_numpy(to_roll(primer, low, high)).float()                     # (P, F)
    x = torch.cat([torch.zeros(1, roll.size(1)), roll]).unsqueeze(0)                # (1, 1 + P, F)
    logits, state = net(x)
    frames = []
    for _ in range(steps):
        last = logits[:, -1]                                                         # (1, F)
        frame = (last > 0).float() if temperature == 0 else \
            torch.bernoulli(torch.sigmoid(last / temperature), generator=gen)
        frames.append(frame)
        logits, state = net(frame.unsqueeze(1), state=state)
    new = from_roll(torch.cat(frames).numpy(), low) if frames else []
    return [*primer, *new]
