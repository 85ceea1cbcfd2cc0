"""DVC stage `fetch`: run the recipe's fetcher and write its documents to raw/documents.jsonl. Frames that a recipe
gives as numpy arrays (audio features: millions of numbers) go to raw/frames.npz instead, one flat array plus
offsets, and the row says where: {"frames": {"npz": FRAMES, "row": i}}; read_documents puts them back."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from types import UnionType

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from seqpipe.atomic import atomic_path
from seqpipe.data.documents import Document
from seqpipe.errors import SeqpipeError, unreadable

DOCUMENTS = "documents.jsonl"
FRAMES = "frames.npz"


def _takes_list(annotation: object) -> bool:
    return typing.get_origin(annotation) is list or any(_takes_list(a) for a in typing.get_args(annotation)
                                                        if typing.get_origin(annotation) in (typing.Union, UnionType))


def fetch_args(cfg: DictConfig) -> dict:
    """recipe.fetch, where one value given for an argument that takes a list is read as a list of one:
    `recipe.fetch.paths=corpus` (no brackets) means [corpus], not the characters of 'corpus'."""
    args = OmegaConf.to_container(cfg.recipe.fetch, resolve=True)
    try:
        hints = typing.get_type_hints(get_method(args["_target_"]))
    except Exception:  # a target that does not resolve: instantiate names it
        return args
    for key, value in args.items():
        if isinstance(value, str | int | float) and _takes_list(hints.get(key)):
            print(f"fetch: recipe.fetch.{key}={value!r} read as a list of one: [{value}]", file=sys.stderr)
            args[key] = [value]
    return args


def run(cfg: DictConfig) -> dict:
    try:
        docs: list[Document] = instantiate(fetch_args(cfg))
    except InstantiationException as e:  # Hydra wraps the recipe's own error: show that one
        if isinstance(e.__cause__, SeqpipeError):
            raise e.__cause__ from None
        if isinstance(e.__cause__, PermissionError):
            raise unreadable(e.__cause__) from None
        raise
    if not docs:
        raise SeqpipeError(f"recipe {cfg.recipe.name!r} produced no documents; check recipe.fetch in conf/")
    with atomic_path(Path(cfg.paths.raw), is_dir=True) as out:
        write_documents(out, docs)
    # characters of text, and frames (steps) of frame sequences and piano rolls: the figures the documents have
    sizes = {"characters": sum(len(d.get("text", "")) for d in docs),  # type: ignore[arg-type]
             "frames": sum(len(d.get("frames", d.get("notes", ""))) for d in docs)}  # type: ignore[arg-type]
    stats = {"documents": len(docs), **{unit: n for unit, n in sizes.items() if n}}
    shown = ", ".join(f"{n:,} {unit}" for unit, n in sizes.items() if n)
    print(f"fetch: {stats['documents']} documents, {shown or 'no content'} -> {cfg.paths.raw}", file=sys.stderr)
    return stats


def write_documents(out: Path, docs: list[Document]) -> None:
    """documents.jsonl, and frames.npz for the rows whose frames are arrays (float32, one flat (sum T, F) array)."""
    arrays: list[np.ndarray] = []
    with open(out / DOCUMENTS, "w", encoding="utf-8") as f:
        for doc in docs:
            if isinstance(doc.get("frames"), np.ndarray):
                arrays.append(np.asarray(doc["frames"], np.float32).reshape(len(doc["frames"]), -1))
                doc = {**doc, "frames": {"npz": FRAMES, "row": len(arrays) - 1}}  # type: ignore[typeddict-item]
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    if arrays:
        offsets = np.cumsum([0, *(len(a) for a in arrays)])
        np.savez_compressed(out / FRAMES, frames=np.concatenate(arrays), offsets=offsets)  # speech: 119 -> 50 MB


def read_documents(raw_dir: str | Path) -> list[Document]:
    path = Path(raw_dir) / DOCUMENTS
    if not path.is_file():
        raise SeqpipeError(f"{path} not found: run the fetch stage first (`dvc repro fetch`)")
    with open(path, encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    stored = [d for d in docs if isinstance(d.get("frames"), dict)]
    if stored:
        npz = Path(raw_dir) / FRAMES
        if not npz.is_file():
            raise SeqpipeError(f"{path} refers to {npz}, which is missing: run the fetch stage again (`dvc repro "
                               "fetch`)")
        with np.load(npz) as z:
            frames, offsets = z["frames"], z["offsets"]
        for d in stored:
            row = d["frames"]["row"]  # type: ignore[index]
            d["frames"] = frames[offsets[row]:offsets[row + 1]]
    return docs
