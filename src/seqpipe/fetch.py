"""DVC stage `fetch`: run the recipe's fetcher and write its documents to raw/documents.jsonl."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from seqpipe.atomic import atomic_path
from seqpipe.errors import SeqpipeError, unreadable
from seqpipe.recipes import Document

DOCUMENTS = "documents.jsonl"


def run(cfg: DictConfig) -> dict:
    try:
        docs: list[Document] = instantiate(cfg.recipe.fetch)
    except InstantiationException as e:  # Hydra wraps the recipe's own error: show that one
        if isinstance(e.__cause__, SeqpipeError):
            raise e.__cause__ from None
        if isinstance(e.__cause__, PermissionError):
            raise unreadable(e.__cause__) from None
        raise
    if not docs:
        raise SeqpipeError(f"recipe {cfg.recipe.name!r} produced no documents; check recipe.fetch in conf/")
    with atomic_path(Path(cfg.paths.raw), is_dir=True) as out:
        with open(out / DOCUMENTS, "w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    # characters of text, or frames (steps) of frame sequences and piano rolls
    field = next((f for f in ("frames", "notes") if f in docs[0]), "text")
    unit = "characters" if field == "text" else "frames"
    stats = {"documents": len(docs), unit: sum(len(d.get(field, "")) for d in docs)}  # type: ignore[arg-type]
    print(f"fetch: {stats['documents']} documents, {stats[unit]:,} {unit} -> {cfg.paths.raw}", file=sys.stderr)
    return stats


def read_documents(raw_dir: str | Path) -> list[Document]:
    path = Path(raw_dir) / DOCUMENTS
    if not path.is_file():
        raise SeqpipeError(f"{path} not found: run the fetch stage first (`dvc repro fetch`)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
