"""DVC stage `prepare`: documents -> the task's arrays (token streams split by document for a language model,
examples otherwise) and prepared/meta.json, which names the recipe and settings the data was made from."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from seqpipe.atomic import write_json
from seqpipe.data import provenance
from seqpipe.data.vocab import BOS, BOS_ID, EOS, EOS_ID, SPECIALS, UNK_ID, Vocab
from seqpipe.errors import SeqpipeError
from seqpipe.fetch import read_documents
from seqpipe.recipes import Document
from seqpipe.tasks import META, get_task

SPLITS = ("train", "val", "test")


def split_documents(docs: list[Document], val_fraction: float, test_fraction: float,
                    seed: int) -> dict[str, list[Document]]:
    """Whole documents per split, so no text leaks between them. With fewer than 3 documents the text
    is cut into three contiguous blocks instead (train first, then val, then test)."""
    if len(docs) >= 3:
        order = np.random.default_rng(seed).permutation(len(docs))
        n_test = max(1, round(len(docs) * test_fraction))
        n_val = max(1, round(len(docs) * val_fraction))
        n_train = max(1, len(docs) - n_val - n_test)
        pick = [docs[i] for i in order]
        return {"train": pick[:n_train], "val": pick[n_train:n_train + n_val],
                "test": pick[n_train + n_val:n_train + n_val + n_test]}
    print(f"prepare: only {len(docs)} document(s): splitting the text into contiguous blocks", file=sys.stderr)
    text = "".join(d["text"] for d in docs)
    a = int(len(text) * (1 - val_fraction - test_fraction))
    b = int(len(text) * (1 - test_fraction))
    return {"train": [{"id": "block-train", "text": text[:a]}], "val": [{"id": "block-val", "text": text[a:b]}],
            "test": [{"id": "block-test", "text": text[b:]}]}


def split_examples(rows: list[Document], val_fraction: float, test_fraction: float, seed: int,
                   stratify: bool) -> dict[str, list[Document]]:
    """Random split of independent examples; with `stratify`, each label keeps its share in every split. Rows that
    carry a `group` (e.g. the pronunciations of one word) land in one split together."""
    if any("group" in row for row in rows):
        return _split_groups(rows, val_fraction, test_fraction, seed)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[Document]] = {}
    for row in rows:
        groups.setdefault(row.get("label", "") if stratify else "", []).append(row)
    out: dict[str, list[Document]] = {name: [] for name in SPLITS}
    for _, group in sorted(groups.items()):
        order = rng.permutation(len(group))
        n_test, n_val = round(len(group) * test_fraction), round(len(group) * val_fraction)
        picked = [group[i] for i in order]
        out["test"] += picked[:n_test]
        out["val"] += picked[n_test:n_test + n_val]
        out["train"] += picked[n_test + n_val:]
    return out


def encode_splits(splits: dict[str, list[Document]], tokenizer, p: DictConfig) -> tuple[Vocab, dict]:  # noqa: ANN001
    """The vocabulary of the training split (val/test tokens it lacks count as <unk>), and each split as one
    stream of ids: <bos> document <eos> <bos> document <eos> ..."""
    if hasattr(tokenizer, "codepoints"):
        return encode_chars(splits, tokenizer, p)
    tokens = {name: [[BOS, *tokenizer.tokenize(d["text"]), EOS] for d in _progress(splits[name], name)]
              for name in SPLITS}
    counts = Counter(t for doc in tokens["train"] for t in doc)
    vocab = Vocab.build(counts, p.min_freq, p.max_size, tokenizer=dict(p.tokenizer))
    return vocab, {name: np.fromiter((i for doc in tokens[name] for i in vocab.encode(doc)), dtype=vocab.dtype())
                   for name in SPLITS}


def encode_chars(splits: dict[str, list[Document]], tokenizer, p: DictConfig) -> tuple[Vocab, dict]:  # noqa: ANN001
    """`encode_splits` for character tokenizers, on arrays of code points: the same vocabulary and ids as the
    token-by-token path (tested), without a Python object per character."""
    points = {name: [tokenizer.codepoints(d["text"]) for d in _progress(splits[name], name)] for name in SPLITS}
    streams = {name: np.concatenate([np.zeros(0, "<u4"), *docs]) for name, docs in points.items()}
    counts = np.bincount(streams["train"])
    chars = np.flatnonzero(counts)
    vocab = Vocab.build(Counter(dict(zip(map(chr, chars.tolist()), counts[chars].tolist()))), p.min_freq,
                        p.max_size, tokenizer=dict(p.tokenizer))
    # code point -> id, through a table as long as the largest code point seen (at most 0x10FFFF entries)
    lut = np.full(max((int(s.max()) for s in streams.values() if s.size), default=0) + 1, UNK_ID, vocab.dtype())
    for token in vocab.itos[len(SPECIALS):]:
        lut[ord(token)] = vocab.stoi[token]
    for name, docs in points.items():
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        ends = np.cumsum(lengths)
        # <bos> before and <eos> after each document: offsets interleaved (start0, end0, start1, ...) so that
        # an <eos> comes before the next <bos> at the same offset (np.insert keeps the order of equal offsets).
        at = np.stack([ends - lengths, ends], axis=1).ravel()
        streams[name] = np.insert(lut[streams[name]], at, np.tile([BOS_ID, EOS_ID], len(docs))).astype(vocab.dtype())
    return vocab, streams


def _progress(docs: list[Document], name: str):  # noqa: ANN202
    return tqdm(docs, desc=f"tokenize {name}", unit="doc", file=sys.stderr)


def run(cfg: DictConfig) -> dict:
    """Documents -> the task's arrays and prepared/meta.json; the figures go to reports/data.json."""
    task = get_task(cfg.task)
    docs = read_documents(cfg.paths.raw)
    raw_file = Path(cfg.paths.raw) / "documents.jsonl"
    if all("frames" not in d and "notes" not in d for d in docs) \
            and sum(len(d.get("text", "").strip()) for d in docs) == 0:
        raise SeqpipeError(f"the corpus is empty: {raw_file} holds no text (recipe {cfg.recipe.name!r})")
    stats = task.prepare(cfg, docs, raw_file)
    provenance.record(cfg, Path(cfg.paths.prepared) / META)  # what train and evaluate check the data against
    write_json(Path(cfg.paths.reports) / "data.json", stats)
    return stats


def _split_groups(rows: list[Document], val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, list[Document]]:
    """Whole groups per split (rows without a group are a group of their own), about the fractions of rows."""
    groups: dict[str, list[Document]] = {}
    for row in rows:
        groups.setdefault(str(row.get("group", f"\0{row['id']}")), []).append(row)
    keys = list(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    out: dict[str, list[Document]] = {name: [] for name in SPLITS}
    n_test, n_val = round(len(rows) * test_fraction), round(len(rows) * val_fraction)
    for i in order:
        group = groups[keys[i]]
        name = "test" if len(out["test"]) < n_test else "val" if len(out["val"]) < n_val else "train"
        out[name] += group
    return out
