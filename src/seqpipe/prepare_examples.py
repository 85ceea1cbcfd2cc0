"""prepare for labelled tasks: examples -> tokens and targets -> vocabulary -> ragged arrays, stratified split."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from seqpipe.atomic import atomic_path, write_json
from seqpipe.errors import SeqpipeError
from seqpipe.examples import save_examples
from seqpipe.prepare import SPLITS, split_examples
from seqpipe.recipes import Document
from seqpipe.tokenize import CharTokenizer, WordTokenizer
from seqpipe.vocab import UNK_ID, Vocab


def label_set(cfg: DictConfig, docs: list[Document], key: str) -> list[str]:
    """The configured labels (recipe.labels), checked against the data; else the sorted labels found."""
    found = Counter(ch for d in docs for ch in d[key]) if key == "tags" else Counter(d[key] for d in docs)
    configured = cfg.recipe.get("labels")
    if configured is None:
        return sorted(found)
    configured = [str(x) for x in configured]
    if outside := {k: v for k, v in found.items() if k not in configured}:
        shown = ", ".join(f"{k!r} ({v}x)" for k, v in sorted(outside.items())[:10])
        raise SeqpipeError(f"labels outside the configured set {configured}: {shown}; fix the data or "
                           "recipe.labels")
    return configured


def prepare_examples(cfg: DictConfig, docs: list[Document], tokenizer: CharTokenizer | WordTokenizer,
                     raw_file: Path) -> dict:
    p = cfg.prepare
    key = "tags" if cfg.task == "tag" else "label"
    missing = [d["id"] for d in docs if key not in d]
    if missing:
        raise SeqpipeError(f"{raw_file}: {len(missing)} rows have no {key!r} (first: {missing[0]}); task "
                           f"{cfg.task!r} needs one per row")
    labels = label_set(cfg, docs, key)
    index = {label: i for i, label in enumerate(labels)}
    source_names = sorted({d.get("source", "") for d in docs})

    stats: dict = {"truncated": 0, "dropped_empty": 0, "dropped_duplicates": 0}
    rows: list[dict] = []  # the document plus its tokens and encoded target
    seen: set[tuple[str, ...]] = set()
    for d in tqdm(docs, desc="tokenize", unit="example", file=sys.stderr, mininterval=1.0):
        tokens = tokenizer.tokenize(d["text"])
        if p.dedupe and key == "label":  # the same text in train and test would inflate test scores
            if tuple(tokens) in seen:
                stats["dropped_duplicates"] += 1
                continue
            seen.add(tuple(tokens))
        if not tokens:
            if p.empty == "error":
                raise SeqpipeError(f"{raw_file}: example {d['id']!r} has an empty text (prepare.empty=drop "
                                   "drops such rows with a count)")
            stats["dropped_empty"] += 1
            continue
        if key == "tags":
            if len(d["tags"]) != len(tokens):
                raise SeqpipeError(f"example {d['id']!r}: {len(tokens)} tokens but {len(d['tags'])} tags; tagging "
                                   "needs one tag per character (prepare.tokenizer = CharTokenizer)")
            target: list[int] | int = [index[t] for t in d["tags"]]
        else:
            target = index[d["label"]]
        if p.max_len and len(tokens) > p.max_len:  # keep the beginning; count what was cut
            stats["truncated"] += 1
            tokens = tokens[: p.max_len]
            target = target[: p.max_len] if isinstance(target, list) else target
        rows.append({**d, "tokens": tokens, "target": target})
    if stats["dropped_duplicates"]:
        print(f"prepare: dropped {stats['dropped_duplicates']} examples whose text repeats an earlier one "
              "(prepare.dedupe)", file=sys.stderr)
    if stats["dropped_empty"]:
        print(f"prepare: dropped {stats['dropped_empty']} examples with an empty text", file=sys.stderr)
    if stats["truncated"]:
        print(f"prepare: truncated {stats['truncated']} examples to prepare.max_len={p.max_len} tokens",
              file=sys.stderr)

    splits = split_examples(rows, p.val_fraction, p.test_fraction, p.split_seed,  # type: ignore[arg-type]
                            stratify=key == "label")
    counts = Counter(t for r in splits["train"] for t in r["tokens"])
    vocab = Vocab.build(counts, p.min_freq, p.max_size, tokenizer=dict(p.tokenizer))
    stats["vocab_size"] = len(vocab)
    stats["num_classes"] = len(labels)
    with atomic_path(Path(cfg.paths.prepared), is_dir=True) as out:
        for name in SPLITS:
            picked = splits[name]
            if not picked:
                raise SeqpipeError(f"the {name} split is empty ({raw_file}): add examples or raise "
                                   f"prepare.{name}_fraction")
            ids = [np.asarray(vocab.encode(r["tokens"]), dtype=np.int64) for r in picked]
            targets = ([np.asarray(r["target"], dtype=np.int64) for r in picked] if key == "tags"
                       else np.asarray([r["target"] for r in picked], dtype=np.int64))
            sources = np.asarray([source_names.index(r.get("source", "")) for r in picked], dtype=np.int16)
            save_examples(out / f"{name}.npz", ids, targets, sources, vocab.dtype())
            n_tokens = sum(len(a) for a in ids)
            stats[f"{name}_examples"] = len(picked)
            stats[f"{name}_tokens"] = n_tokens
            stats[f"{name}_unk_rate"] = round(float(sum(int((a == UNK_ID).sum()) for a in ids) / n_tokens), 6)
        vocab.save(out / "vocab.json")
        write_json(out / "labels.json", {"labels": labels, "sources": source_names,
                                         "task": cfg.task})
        write_json(out / "splits.json", {name: [d["id"] for d in splits[name]] for name in SPLITS})
    write_json(Path(cfg.paths.reports) / "data.json", stats)
    print(f"prepare: {len(rows):,} examples, vocab {len(vocab):,}, {len(labels)} classes, train/val/test "
          f"{stats['train_examples']:,}/{stats['val_examples']:,}/{stats['test_examples']:,}", file=sys.stderr)
    return stats
