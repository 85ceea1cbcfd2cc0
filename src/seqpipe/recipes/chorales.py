"""The 371 four-part chorales of J. S. Bach (Riemenschneider numbering) in music21's own corpus, sampled on a grid.

Each chorale becomes one row: `notes`, the MIDI pitches sounding at every grid step (`frame` quarter notes; 1.0 =
a frame per beat, the setting of the JSB Chorales benchmark of Boulanger-Lewandowski et al. 2012), for the
`pianoroll` task; or with `representation: events`, `text` for the language-model path: each frame as its pitch
tokens then "|" ("60 64 67 72 | 60 65 69 |"), read with a whitespace tokenizer.

Parsing all 371 scores takes about a minute, so the parse is cached in `cache_dir` with its sha256: a cache that no
longer matches its hash (a half-written or edited file) is reported and parsed again.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed
from pathlib import Path

from music21 import corpus
from tqdm import tqdm

from seqpipe.atomic import write_text
from seqpipe.data.music import sample_notes
from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document

REPRESENTATIONS = ("pianoroll", "events")
STEP = "|"
TOTAL = 371  # chorales in music21's corpus  # the events representation's end-of-frame token


def _check_version(version: str) -> None:
    try:
        have = installed("music21")
    except PackageNotFoundError:
        raise SeqpipeError(f"the chorales recipe reads music21's corpus: pip install music21=={version}") from None
    if have != version:  # another release may number, edit or add chorales differently
        raise SeqpipeError(f"music21 {have} is installed but recipe.fetch.version pins {version}: "
                           f"pip install music21=={version} (or set recipe.fetch.version={have} knowingly)")


def parse(frame: float, limit: int | None = None) -> list[dict]:
    """The chorales of music21's corpus (the first `limit`, else all) as {"id", "title", "key", "tonic", "notes"}
    in Riemenschneider order (`tonic`: the analysed key's tonic as a pitch class, C = 0)."""
    total = min(limit or TOTAL, TOTAL)
    rows = []
    chorales = corpus.chorales.Iterator(1, total)  # Riemenschneider numbers 1..total; it also sets the titles
    for number, score in enumerate(tqdm(chorales, total=total, desc="parse chorales", unit="chorale",
                                        file=sys.stderr), start=1):
        notes = sample_notes(score, frame)
        key = score.analyze("key")  # Krumhansl-Schmuckler: the key the notes fit best
        name = Path(str(score.metadata.corpusFilePath)).stem  # bwv269
        rows.append({"id": f"R{number:03d}-{name}", "title": score.metadata.title or "",
                     "key": f"{key.tonic.name} {key.mode}", "tonic": key.tonic.pitchClass, "notes": notes})
    return rows


def cached_parse(frame: float, version: str, cache_dir: str, limit: int | None = None) -> list[dict]:
    """`parse(frame, limit)`, from the cache when its hash holds; a corrupted cache is reported and rebuilt."""
    first = f"-first{limit}" if limit else ""
    cache = Path(cache_dir) / f"chorales-keys-music21-{version}-frame{frame:g}{first}.jsonl"
    digest = cache.with_name(cache.name + ".sha256")
    if cache.is_file() and digest.is_file():
        data = cache.read_bytes()
        if hashlib.sha256(data).hexdigest() == digest.read_text().strip():
            return [json.loads(line) for line in data.decode("utf-8").splitlines()]
        warnings.warn(f"{cache} does not match its sha256 ({digest.name}): the cached parse is corrupted; parsing "
                      "the chorales again", stacklevel=2)
    rows = parse(frame, limit)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    write_text(cache, text)  # atomic: an interrupted write leaves the old file or none
    write_text(digest, hashlib.sha256(text.encode("utf-8")).hexdigest() + "\n")
    return rows


def events_text(notes: list[list[int]]) -> str:
    """Frames as text: each frame's pitches then STEP."""
    return " ".join(" ".join([*map(str, frame), STEP]) for frame in notes)


def events_notes(text: str) -> list[list[int]]:
    """The inverse of events_text (tokens that are not pitches, such as <unk>, are skipped)."""
    frames = [[int(tok) for tok in chunk.split() if tok.isdigit()] for chunk in text.split(STEP)]
    return frames[:-1] if frames and not frames[-1] else frames


def in_c(row: dict) -> list[list[int]]:
    """A chorale's notes moved to C major or C minor: down or up by the nearest interval from its tonic to C."""
    k = -row["tonic"] if row["tonic"] <= 6 else 12 - row["tonic"]  # G (7) goes up 5 to C, D (2) down 2
    return [[p + k for p in frame] for frame in row["notes"]]


def fetch(version: str = "10.5.1", frame: float = 1.0, representation: str = "pianoroll",
          cache_dir: str = "data/downloads", limit: int | None = None, to_c: bool = False) -> list[Document]:
    """The chorales as rows for the pianoroll task (`notes`) or the language model (`text`); `limit` keeps the
    first chorales only (quick trials); `to_c` moves every chorale to C major or C minor (the JSB Chorales
    benchmark's setting)."""
    if representation not in REPRESENTATIONS:
        raise SeqpipeError(f"recipe.fetch.representation={representation!r} is not one of "
                           f"{', '.join(REPRESENTATIONS)}")
    if not frame > 0:
        raise SeqpipeError(f"recipe.fetch.frame={frame}: the grid step in quarter notes must be > 0 (1.0 = a beat, "
                           "0.5 = an eighth note)")
    _check_version(version)
    if limit is not None and limit < 3:
        raise SeqpipeError(f"recipe.fetch.limit={limit}: need at least 3 chorales (train, val, test), or null for all")
    rows = cached_parse(float(frame), version, cache_dir, limit)
    if to_c:
        rows = [{**r, "notes": in_c(r)} for r in rows]
    if representation == "events":
        return [{"id": r["id"], "text": events_text(r["notes"])} for r in rows]
    return [{"id": r["id"], "notes": r["notes"], "title": r["title"], "key": r["key"]}  # type: ignore[typeddict-item]
            for r in rows]
