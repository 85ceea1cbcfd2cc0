"""The user's own sequence pairs (sequence to sequence): one input and its output per row of a .csv/.tsv file or
line of a .jsonl file. Rows with the same input (several outputs of one input) land in one split, and a prediction
counts as right when it matches any of them."""

from __future__ import annotations

import sys
from pathlib import Path

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document
from seqpipe.recipes.text_csv import FORMATS, _blank, _csv_rows, _jsonl_rows
from seqpipe.recipes.text_file import read_text


def fetch(path: str, source_column: str = "source", target_column: str = "target", encoding: str = "utf-8",
          errors: str = "strict") -> list[Document]:
    """Read (input, output) pairs; rows with an empty input or output are skipped with a count."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise SeqpipeError(f"pairs file not found: {path}; set recipe.fetch.path to a .csv, .tsv or .jsonl file with "
                           f"columns {source_column!r} and {target_column!r}")
    if file.suffix.lower() not in FORMATS:
        raise SeqpipeError(f"{path}: unknown extension {file.suffix!r}; rename it to one of {', '.join(FORMATS)}")
    text = read_text(file, encoding, errors).removeprefix("\ufeff")
    read_rows = _csv_rows if FORMATS[file.suffix.lower()] == "csv" else _jsonl_rows
    docs: list[Document] = []
    skipped = []
    for n, where, row in read_rows(text, file, {"source_column": source_column, "target_column": target_column}):
        if _blank(row[source_column]) or _blank(row[target_column]):
            skipped.append(where)
            continue
        source = str(row[source_column]).strip()
        docs.append({"id": f"{file.name}:{n}", "text": source, "output": str(row[target_column]).strip(),
                     "group": source})
    if skipped:
        print(f"fetch: skipped {len(skipped)} rows with an empty input or output in {path} (first: "
              f"{', '.join(skipped[:3])})", file=sys.stderr)
    if not docs:
        raise SeqpipeError(f"{path}: no row has both a {source_column!r} and a {target_column!r}")
    return docs
