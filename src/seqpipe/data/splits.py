"""Train / val / test splits: whole documents for language models, examples (stratified by label, whole groups
together) for the rest; the same split for the same seed."""

from __future__ import annotations

import sys

import numpy as np

from seqpipe.data.documents import Document

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
