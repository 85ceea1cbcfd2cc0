"""prepare for independent examples (classify, tag, regress): inputs (tokens or frames) and targets -> ragged arrays,
a split (the source's own train/test split when its rows carry one, else a random, stratified split), and
prepared/meta.json (task, inputs, target) for training and serving."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from seqpipe.atomic import atomic_path, write_json
from seqpipe.data.examples import save_examples
from seqpipe.data.inputs import fit_frames, frames_array
from seqpipe.data.meta import META
from seqpipe.data.splits import SPLITS, split_examples
from seqpipe.data.vocab import UNK_ID, Vocab
from seqpipe.errors import SeqpipeError

if TYPE_CHECKING:  # annotations only: the tasks call this module, not the other way round
    from seqpipe.recipes import Document
    from seqpipe.tasks.base import Task

FIELD = {"tokens": "text", "frames": "frames"}  # the document field each input kind reads


def label_set(cfg: DictConfig, found: Counter) -> list[str]:
    """The configured labels (recipe.labels), checked against the labels `found` in the data (with their counts);
    else the sorted labels found."""
    configured = cfg.recipe.get("labels")
    if configured is None:
        return sorted(found)
    configured = [str(x) for x in configured]
    if outside := {k: v for k, v in found.items() if k not in configured}:
        shown = ", ".join(f"{k!r} ({v}x)" for k, v in sorted(outside.items())[:10])
        raise SeqpipeError(f"labels outside the configured set {configured}: {shown}; fix the data or "
                           "recipe.labels")
    return configured


def check_fields(cfg: DictConfig, task: Task, docs: list[Document], raw_file: Path) -> None:
    """Every row has the input the config reads and the target the task learns, else a message with the fix."""
    kind, field = cfg.prepare.inputs, FIELD[cfg.prepare.inputs]
    if missing := [d["id"] for d in docs if field not in d]:
        other = next((k for k, f in FIELD.items() if f in docs[0]), None)
        fix = f"set prepare.inputs={other}" if other else f"give every row a {field!r} field"
        raise SeqpipeError(f"{raw_file}: {len(missing)} rows have no {field!r} (first: {missing[0]}), but "
                           f"prepare.inputs={kind} reads {field}: recipe {cfg.recipe.name!r} gives rows with "
                           f"{', '.join(sorted(set(docs[0]) - {'id'}))}; {fix}")
    if missing := [d["id"] for d in docs if task.key not in d]:
        raise SeqpipeError(f"{raw_file}: {len(missing)} rows have no {task.key!r} (first: {missing[0]}); task "
                           f"{task.name!r} needs one per row")


def read_input(cfg: DictConfig, doc: Document, tokenizer: object) -> list[str] | np.ndarray:
    """One document's input: its tokens, or its frames as a (T, F) array (refused with the row when malformed)."""
    if cfg.prepare.inputs == "tokens":
        return tokenizer.tokenize(doc["text"])  # type: ignore[attr-defined]
    try:
        return frames_array(doc["frames"])
    except ValueError as e:
        raise SeqpipeError(f"example {doc['id']!r}: {e}; fix the data (nothing was written)") from None


def examples(cfg: DictConfig, task: Task, docs: list[Document], target_meta: dict, stats: dict) -> list[dict]:
    """Documents with their input and encoded target; duplicates and empty inputs dropped (counted), long ones cut."""
    p = cfg.prepare
    tokenizer = instantiate(p.tokenizer) if p.inputs == "tokens" else None
    rows: list[dict] = []
    seen: set = set()
    width = None
    for d in tqdm(docs, desc="read examples", unit="example", file=sys.stderr, mininterval=1.0):
        x = read_input(cfg, d, tokenizer)
        if isinstance(x, np.ndarray):
            if width is not None and x.shape[1] != width:
                raise SeqpipeError(f"example {d['id']!r} has {x.shape[1]} features per step, the first example "
                                   f"{width}; every example needs the same number: fix the data")
            width = x.shape[1]
        if p.dedupe and task.dedupe:  # the same input in train and test would inflate test scores
            seen_key = x.tobytes() if isinstance(x, np.ndarray) else tuple(x)
            if seen_key in seen:
                stats["dropped_duplicates"] += 1
                continue
            seen.add(seen_key)
        if not len(x):  # only text gets here: read_input refuses a series of length 0
            if p.empty == "error":
                raise SeqpipeError(f"example {d['id']!r} has an empty text (prepare.empty=drop drops such rows "
                                   "with a count)")
            stats["dropped_empty"] += 1
            continue
        target = task.encode_target(d, target_meta)
        if task.aligned and len(target) != len(x):
            raise SeqpipeError(f"example {d['id']!r}: {len(x)} tokens but {len(target)} tags; tagging needs one tag "
                               "per character (prepare.tokenizer = CharTokenizer)")
        if p.max_len and task.refuses_long and max(len(x), len(target)) > p.max_len:  # a cut pair would be wrong
            stats["dropped_long"] += 1
            continue
        if p.max_len and len(x) > p.max_len:  # keep the beginning; count what was cut
            stats["truncated"] += 1
            x = x[: p.max_len]
            target = target[: p.max_len] if isinstance(target, list) else target
        rows.append({**d, "x": x, "target": target})
    for key, what in (("dropped_duplicates", "dropped {} examples whose input repeats an earlier one (prepare.dedupe)"),
                      ("dropped_empty", "dropped {} examples with an empty input"),
                      ("truncated", f"truncated {{}} examples to prepare.max_len={p.max_len} steps"),
                      ("dropped_long", f"dropped {{}} pairs with an input or output over prepare.max_len={p.max_len} "
                                       "tokens")):
        if stats.get(key):
            print(f"prepare: {what.format(stats[key])}", file=sys.stderr)
    return rows


def split_rows(cfg: DictConfig, task: Task, rows: list[dict]) -> dict[str, list[dict]]:
    """The source's own train/test split when its rows carry one (val carved from train), else a random split."""
    p = cfg.prepare
    if not any("split" in r for r in rows):
        return split_examples(rows, p.val_fraction, p.test_fraction, p.split_seed,  # type: ignore[arg-type]
                              stratify=task.stratify)
    if bad := sorted({str(r.get("split")) for r in rows} - {"train", "test"}):
        raise SeqpipeError(f"rows carry split {bad[0]!r}; a row's split must be 'train' or 'test' (or no row has one)")
    train = split_examples([r for r in rows if r["split"] == "train"], p.val_fraction, 0.0,  # type: ignore[misc]
                           p.split_seed, stratify=task.stratify)
    return {"train": train["train"], "val": train["val"], "test": [r for r in rows if r["split"] == "test"]}


def prepare_examples(cfg: DictConfig, task: Task, docs: list[Document], raw_file: Path) -> dict:
    p = cfg.prepare
    check_fields(cfg, task, docs, raw_file)
    target_meta = task.target_meta(cfg, docs)
    source_names = sorted({d.get("source", "") for d in docs})
    stats: dict = {"truncated": 0, "dropped_empty": 0, "dropped_duplicates": 0, "dropped_long": 0}
    splits = split_rows(cfg, task, examples(cfg, task, docs, target_meta, stats))
    for name in SPLITS:
        if not splits[name]:
            raise SeqpipeError(f"the {name} split is empty ({raw_file}): add examples or raise prepare.{name}_fraction")
    stats |= task.fit_targets(cfg, splits, target_meta) or {}
    vocab = None
    if p.inputs == "tokens":
        vocab = Vocab.build(Counter(t for r in splits["train"] for t in r["x"]), p.min_freq, p.max_size,
                            tokenizer=dict(p.tokenizer))
        inputs, dtype = {"kind": "tokens", "vocab_size": len(vocab)}, vocab.dtype()
        stats["vocab_size"] = len(vocab)
    else:
        inputs, dtype = fit_frames([r["x"] for r in splits["train"]]), np.dtype(np.float32)
        if cfg.recipe.get("audio"):  # frames computed from audio: the served model computes them the same way
            inputs["audio"] = OmegaConf.to_container(cfg.recipe.audio)
        stats["features"] = inputs["features"]
    if "labels" in target_meta:
        stats["num_classes"] = len(target_meta["labels"])
    meta = {"task": task.name, "inputs": inputs, "target": target_meta, "sources": source_names,
            "max_len": p.max_len}
    with atomic_path(Path(cfg.paths.prepared), is_dir=True) as out:
        for name in SPLITS:
            picked = splits[name]
            xs = [np.asarray(vocab.encode(r["x"]), dtype=np.int64) for r in picked] if vocab else \
                [r["x"] for r in picked]
            targets = [np.asarray(r["target"]) for r in picked] if isinstance(picked[0]["target"], list) \
                else np.asarray([r["target"] for r in picked])
            sources = np.asarray([source_names.index(r.get("source", "")) for r in picked], dtype=np.int16)
            save_examples(out / f"{name}.npz", xs, targets, sources, dtype)
            steps = sum(len(a) for a in xs)
            stats[f"{name}_examples"] = len(picked)
            stats[f"{name}_{'tokens' if vocab else 'steps'}"] = steps
            if vocab:
                stats[f"{name}_unk_rate"] = round(float(sum(int((a == UNK_ID).sum()) for a in xs) / steps), 6)
        if vocab:
            vocab.save(out / "vocab.json")
        write_json(out / META, meta)
        write_json(out / "splits.json", {name: [d["id"] for d in splits[name]] for name in SPLITS})
    size = f"vocab {len(vocab):,}" if vocab else f"{inputs['features']} features per step"
    classes = f", {stats['num_classes']} classes" if "num_classes" in stats else ""
    print(f"prepare: {sum(len(s) for s in splits.values()):,} examples, {size}{classes}, train/val/test "
          f"{stats['train_examples']:,}/{stats['val_examples']:,}/{stats['test_examples']:,}", file=sys.stderr)
    return stats
