"""The user's own labelled examples: one per row of a .csv/.tsv file or per line of a .jsonl (JSON lines) file."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document
from seqpipe.recipes.text_file import read_text

FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
EMPTY_MODES = ("drop", "error")


def _check_columns(path: Path, where: str, found: list[str], wanted: dict[str, str]) -> None:
    missing = {key: col for key, col in wanted.items() if col not in found}
    if missing:
        raise SeqpipeError(
            f"{path}{where}: no column {', '.join(map(repr, missing.values()))} (columns found: {found}); "
            f"set {', '.join(f'recipe.fetch.{key}' for key in missing)} to one of them"
        )


def _csv_rows(text: str, path: Path, wanted: dict[str, str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    _check_columns(path, "", list(reader.fieldnames or []), wanted)
    try:
        for n, row in enumerate(reader, start=1):
            yield n, f"row {n} (line {reader.line_num})", row
    except csv.Error as e:  # e.g. a quote never closed, or a field over csv.field_size_limit()
        raise SeqpipeError(f"{path}, line {reader.line_num}: not valid CSV ({e}); check the quoting around that "
                           "line") from None


def _jsonl_rows(text: str, path: Path, wanted: dict[str, str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SeqpipeError(f"{path}, line {lineno}: not valid JSON ({e.msg}); a .jsonl file needs one JSON "
                               "object per line (use a .csv extension for CSV)") from None
        if not isinstance(row, dict):
            raise SeqpipeError(f"{path}, line {lineno}: expected a JSON object like {{\"text\": ..., \"label\": ...}}"
                               f", got {type(row).__name__}")
        _check_columns(path, f", line {lineno}", sorted(row), wanted)
        yield lineno, f"line {lineno}", row


def _blank(value: Any) -> bool:
    return value is None or not str(value).strip()


def fetch(path: str, text_column: str, label_column: str, source_column: str | None = None,
          encoding: str = "utf-8", empty: str = "drop", errors: str = "strict") -> list[Document]:
    """Read classification examples; empty texts are dropped (empty="drop") or stop (empty="error")."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise SeqpipeError(f"labelled data file not found: {path}; set recipe.fetch.path to a .csv, .tsv or .jsonl "
                           "file")
    if file.suffix.lower() not in FORMATS:
        raise SeqpipeError(f"{path}: unknown extension {file.suffix!r}; rename it to one of {', '.join(FORMATS)}")
    if empty not in EMPTY_MODES:
        raise SeqpipeError(f"recipe.fetch.empty={empty!r}: must be one of {', '.join(EMPTY_MODES)}")
    text = read_text(file, encoding, errors).removeprefix("\ufeff")  # Excel writes a byte-order mark
    wanted = {"text_column": text_column, "label_column": label_column}
    if source_column is not None:
        wanted["source_column"] = source_column
    read_rows = _csv_rows if FORMATS[file.suffix.lower()] == "csv" else _jsonl_rows
    docs: list[Document] = []
    dropped = 0
    for n, where, row in read_rows(text, file, wanted):
        if _blank(row[text_column]):
            if empty == "error":
                raise SeqpipeError(f"{path}, {where}: empty {text_column!r}; fill it in or remove the row, or set "
                                   "recipe.fetch.empty=drop")
            dropped += 1
            continue
        if _blank(row[label_column]):
            raise SeqpipeError(f"{path}, {where}: empty {label_column!r}; every example needs a label")
        source = "" if source_column is None or row[source_column] is None else str(row[source_column])
        docs.append({"id": f"{file.name}:{n}", "text": str(row[text_column]), "label": str(row[label_column]).strip(),
                     "source": source})
    if dropped:
        print(f"fetch: dropped {dropped} rows with an empty {text_column!r} from {path}", file=sys.stderr)
    if not docs:
        raise SeqpipeError(f"{path}: no examples with a non-empty {text_column!r}")
    return docs
