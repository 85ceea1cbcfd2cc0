"""The user's own plain-text files: each file is one document."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from seqpipe.errors import SeqpipeError, unreadable
from seqpipe.recipes import Document


def _expand(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in paths:
        p = Path(pattern).expanduser()
        try:
            if p.is_dir():
                os.listdir(p)  # rglob would skip a directory it may not list, silently
                files += sorted(p.rglob("*.txt"))
            elif any(c in pattern for c in "*?["):
                files += sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            elif p.is_file():
                files.append(p)
            else:
                raise SeqpipeError(f"text file not found: {pattern} (set recipe.fetch.paths to existing files, "
                                   "directories or glob patterns)")
        except OSError as e:
            raise unreadable(e, pattern) from None
    if not files:
        raise SeqpipeError(f"no text files match recipe.fetch.paths={paths}")
    return files


def read_text(path: Path, encoding: str = "utf-8", errors: str = "strict") -> str:
    """Decode a file; with errors='strict' a bad byte is reported with its offset."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise unreadable(e, path) from None
    try:
        return data.decode(encoding, errors=errors)
    except UnicodeDecodeError as e:
        raise SeqpipeError(
            f"{path}: not valid {encoding}: byte 0x{data[e.start]:02x} at offset {e.start} ({e.reason}). "
            "Convert the file to UTF-8, or set recipe.fetch.errors=replace to substitute bad bytes."
        ) from None


def fetch(paths: list[str], encoding: str = "utf-8", errors: str = "strict") -> list[Document]:
    docs: list[Document] = []
    for path in _expand(list(paths)):
        text = read_text(path, encoding, errors)
        if not text.strip():
            print(f"fetch: skipping empty file {path}", file=sys.stderr)
            continue
        docs.append({"id": str(path), "text": text})
    return docs
