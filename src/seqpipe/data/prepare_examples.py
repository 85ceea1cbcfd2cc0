"""prepare for independent examples (classify, tag, regress): inputs (tokens or frames) and targets -> ragged arrays,
a split (the source's own train/test split when its rows carry one, else a random, stratified split), and
prepared/meta.json (task, inputs, target) for training and serving."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from seqpipe.atomic import atomic_path, write_json
from seqpipe.data.documents import Document
from seqpipe.data.examples import save_examples
from seqpipe.data.inputs import KINDS, InputKind, configured
from seqpipe.data.meta import META
from seqpipe.data.splits import SPLITS, split_examples
from seqpipe.errors import SeqpipeError

if TYPE_CHECKING:  # annotations only: the tasks call this module, not the other way round
    from seqpipe.tasks.base import ExampleTask


def label_set(cfg: DictConfig, found: Counter) -> list[str]:
    """The configured labels (recipe.labels), checked against the labels `found` in the data (with their counts);
    else the sorted labels found."""
    given = cfg.recipe.get("labels")
    if given is None:
        return sorted(found)
    given = [str(x) for x in given]
    if outside := {k: v for k, v in found.items() if k not in given}:
        shown = ", ".join(f"{k!r} ({v}x)" for k, v in sorted(outside.items())[:10])
        raise SeqpipeError(f"labels outside the configured set {given}: {shown}; fix the data or recipe.labels")
    return given


def check_fields(cfg: DictConfig, task: ExampleTask, kind: InputKind, docs: list[Document], raw_file: Path) -> None:
    """Every row has the input the config reads and the target the task learns, else a message with the fix."""
    field = kind.field
    if missing := [d["id"] for d in docs if field not in d]:
        other = next((name for name, k in KINDS.items() if k.field in docs[0]), None)
        fix = f"set prepare.inputs={other}" if other else f"give every row a {field!r} field"
        raise SeqpipeError(f"{raw_file}: {len(missing)} rows have no {field!r} (first: {missing[0]}), but "
                           f"prepare.inputs={cfg.prepare.inputs} reads {field}: recipe {cfg.recipe.name!r} gives rows "
                           f"with {', '.join(sorted(set(docs[0]) - {'id'}))}; {fix}")
    if missing := [d["id"] for d in docs if task.key not in d]:
        raise SeqpipeError(f"{raw_file}: {len(missing)} rows have no {task.key!r} (first: {missing[0]}); task "
                           f"{task.name!r} needs one per row")


def examples(cfg: DictConfig, task: ExampleTask, kind: InputKind, docs: list[Document], target_meta: dict,
             stats: dict) -> list[dict]:
    """Documents with their input and encoded target; duplicates and empty inputs dropped (counted), long ones cut
    or dropped as the task says (counted)."""
    p = cfg.prepare
    read = kind.reader(cfg)
    rows: list[dict] = []
    seen: set = set()
    for d in tqdm(docs, desc="read examples", unit="example", file=sys.stderr, mininterval=1.0):
        x = read(d)
        if p.dedupe and task.dedupe:  # the same input in train and test would inflate test scores
            seen_key = kind.key(x)
            if seen_key in seen:
                stats["dropped_duplicates"] += 1
                continue
            seen.add(seen_key)
        if not len(x):  # only text gets here: frames of length 0 are refused as they are read
            if p.empty == "error":
                raise SeqpipeError(f"example {d['id']!r} has an empty text (prepare.empty=drop drops such rows "
                                   "with a count)")
            stats["dropped_empty"] += 1
            continue
        fitted = task.fit_example(d, x, task.encode_target(d, target_meta), p.max_len)
        if fitted is None:
            stats["dropped_long"] += 1
            continue
        stats["truncated"] += len(fitted[0]) < len(x)
        rows.append({**d, "x": fitted[0], "target": fitted[1]})
    for key, what in (("dropped_duplicates", "dropped {} examples whose input repeats an earlier one (prepare.dedupe)"),
                      ("dropped_empty", "dropped {} examples with an empty input"),
                      ("truncated", f"truncated {{}} examples to prepare.max_len={p.max_len} steps"),
                      ("dropped_long", f"dropped {{}} pairs with an input or output over prepare.max_len={p.max_len} "
                                       "tokens")):
        if stats.get(key):
            print(f"prepare: {what.format(stats[key])}", file=sys.stderr)
    return rows


def split_rows(cfg: DictConfig, task: ExampleTask, rows: list[dict]) -> dict[str, list[dict]]:
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


def prepare_examples(cfg: DictConfig, task: ExampleTask, docs: list[Document], raw_file: Path) -> dict:
    p, kind = cfg.prepare, configured(cfg)
    check_fields(cfg, task, kind, docs, raw_file)
    target_meta = task.target_meta(cfg, docs)
    source_names = sorted({d.get("source", "") for d in docs})
    stats: dict = {"truncated": 0, "dropped_empty": 0, "dropped_duplicates": 0, "dropped_long": 0}
    splits = split_rows(cfg, task, examples(cfg, task, kind, docs, target_meta, stats))
    for name in SPLITS:
        if not splits[name]:
            raise SeqpipeError(f"the {name} split is empty ({raw_file}): add examples or raise prepare.{name}_fraction")
    stats |= task.fit_targets(cfg, splits, target_meta) or {}
    inputs = kind.fit(cfg, [r["x"] for r in splits["train"]])
    stats |= kind.stats()
    if "labels" in target_meta:
        stats["num_classes"] = len(target_meta["labels"])
    meta = {"task": task.name, "inputs": inputs, "target": target_meta, "sources": source_names,
            "max_len": p.max_len}
    with atomic_path(Path(cfg.paths.prepared), is_dir=True) as out:
        for name in SPLITS:
            picked = splits[name]
            xs, dtype = kind.store([r["x"] for r in picked])
            targets = [np.asarray(r["target"]) for r in picked] if isinstance(picked[0]["target"], list) \
                else np.asarray([r["target"] for r in picked])
            sources = np.asarray([source_names.index(r.get("source", "")) for r in picked], dtype=np.int16)
            save_examples(out / f"{name}.npz", xs, targets, sources, dtype)
            stats[f"{name}_examples"] = len(picked)
            stats |= kind.split_stats(name, xs)
        kind.save(out)
        write_json(out / META, meta)
        write_json(out / "splits.json", {name: [d["id"] for d in splits[name]] for name in SPLITS})
    classes = f", {stats['num_classes']} classes" if "num_classes" in stats else ""
    print(f"prepare: {sum(len(s) for s in splits.values()):,} examples, {kind.summary()}{classes}, train/val/test "
          f"{stats['train_examples']:,}/{stats['val_examples']:,}/{stats['test_examples']:,}", file=sys.stderr)
    return stats
