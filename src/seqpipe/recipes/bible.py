"""English to Spanish Bible verses: the King James Version and the Reina-Valera 1909, aligned by verse.

Both come as SWORD modules from Debian (`apt-get install sword-text-kjv sword-text-sparv`, into /usr/share/sword:
engKJV2006eb and spaRV1909eb, both in KJV versification) and are read with pysword. One row per verse present in
both: text = the English verse, output = the Spanish verse, id = group = the reference ("Gen 1:1", OSIS book names).

Cleaning (the modules are OSIS with Strong's numbers): footnotes (<note>) go with their content; every other tag
goes and keeps its content, titles included (the psalm titles, the letters heading Psalm 119's stanzas and the
subscriptions of the epistles are verse text in the Spanish too); the stray USFM marker `\\nd` of a few KJV verses
and the pilcrow "¶" go; runs of whitespace become one space.

Alignment: where the RV1909's own verse numbering differs from the KJV's, the module leaves a verse empty and
its neighbours shift (Spanish Num 13:1 is KJV Num 12:16, ...; also Num 30, 1 Sam 24, 1 Kgs 22, 1 Chr 21,
2 Chr 33, Job 39-40, Hos 12, Jonah 2 and a few single verses). With `drop_misaligned`, a pair is dropped when its
own Strong's numbers overlap (Jaccard index) is below FAIR and the Spanish verse overlaps more with an English
verse up to WINDOW verses away: 187 pairs of the 31,084 with the Debian modules (sword-text-kjv 14.3-1,
sword-text-sparv 2.60-1).
"""

from __future__ import annotations

import functools
import html
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from pysword.modules import SwordModules

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document

# Module key -> what it is, for the messages.
ENGLISH = "engKJV2006eb"
SPANISH = "spaRV1909eb"
PACKAGES = {ENGLISH: "sword-text-kjv", SPANISH: "sword-text-sparv"}
MODULES = {ENGLISH: "King James Version, Debian package sword-text-kjv",
           SPANISH: "Reina-Valera 1909, Debian package sword-text-sparv"}
INSTALL = "apt-get install sword-text-kjv sword-text-sparv"
WINDOW = 5  # verses either side searched for a better match (the largest shift, Job 40, is 5 verses)
FAIR = 0.5  # a pair whose own Strong's overlap is at least this is kept whatever its neighbours score

_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
_USFM = re.compile(r"\\\+?[a-z]+\d*\*?")
_EMPTY_TAG = re.compile(r"<[^<>]*/>")  # milestones: line, paragraph and chapter boundaries
_TAG = re.compile(r"<[^<>]*>")
_LEMMA = re.compile(r'lemma="([^"]*)"')
_STRONG = re.compile(r"\b([HG])0*(\d+)\b")


def clean(osis: str) -> str:
    """Plain verse text from the module's OSIS markup (rules in the module docstring)."""
    text = _NOTE.sub("", osis)
    text = _EMPTY_TAG.sub(" ", _USFM.sub("", text))
    text = html.unescape(_TAG.sub("", text)).replace("¶", " ")
    return " ".join(text.split())


def strongs(osis: str) -> frozenset[str]:
    """The Strong's numbers tagged in a verse (notes left out), e.g. {"H430", "H1254"}."""
    lemmas = (lemma for lemma in _LEMMA.findall(_NOTE.sub("", osis)) if lemma.startswith("strong:"))
    return frozenset(p + n for lemma in lemmas for p, n in _STRONG.findall(lemma))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def misaligned(english: list[frozenset[str]], spanish: list[frozenset[str]], window: int = WINDOW) -> list[bool]:
    """For each verse: whether its Spanish side matches a nearby English verse better than its own (and its own
    match is below FAIR).

    Verses without Strong's numbers on either side are never flagged (there is nothing to compare)."""
    flags = []
    for i, es in enumerate(spanish):
        own = _jaccard(english[i], es)
        near = (_jaccard(english[j], es) for j in range(max(0, i - window), min(len(english), i + window + 1))
                if j != i)
        flags.append(bool(es and english[i]) and own < FAIR and any(j > own for j in near))
    return flags


def open_bibles(path: str | Path):
    """The English and Spanish SwordBible of the SWORD directory `path`, or a SeqpipeError saying what to install."""
    path = Path(path).expanduser()
    sword = SwordModules(str(path))
    modules = {}
    if (path / "mods.d").is_dir():
        try:
            modules = sword.parse_modules()
        except OSError as e:
            raise SeqpipeError(f"{path}/mods.d: cannot be read ({e}); check recipe.fetch.path") from None
    missing = [key for key in MODULES if key not in modules]
    if missing:
        what = "; ".join(f"{key} ({MODULES[key]})" for key in missing)
        raise SeqpipeError(f"SWORD module(s) not found in {path} (searched {path / 'mods.d'}/*.conf): {what}. "
                           f"Install them with `{INSTALL}` (Debian/Ubuntu, into /usr/share/sword), or set "
                           "recipe.fetch.path to a SWORD directory that holds both")
    bibles = []
    for key in MODULES:
        try:
            bible = sword.get_bible_from_module(key)
        except (OSError, ValueError) as e:
            raise SeqpipeError(f"SWORD module {key} in {path} cannot be read ({e}); reinstall it with "
                               f"`apt-get install --reinstall {PACKAGES[key]}`") from None
        # pysword decompresses a whole book for every verse it reads; reading in order, the last book suffices.
        if hasattr(bible, "_decompressed_text"):
            bible._decompressed_text = functools.lru_cache(maxsize=2)(bible._decompressed_text)
        bibles.append(bible)
    return bibles


def verses(english, spanish) -> Iterator[tuple[str, str, str]]:
    """(reference, English OSIS, Spanish OSIS) for every verse of the KJV versification, in canon order."""
    books = [book for testament in english.get_structure().get_books().values() for book in testament]
    for book in books:
        for chapter, count in enumerate(book.chapter_lengths, start=1):
            en = list(english.get_iter(books=book.name, chapters=chapter, clean=False))
            es = list(spanish.get_iter(books=book.name, chapters=chapter, clean=False))
            if len(en) != count or len(es) != count:
                raise SeqpipeError(f"{book.osis_name} {chapter}: expected {count} verses, read {len(en)} "
                                   f"(English) and {len(es)} (Spanish); reinstall the modules (`{INSTALL}`)")
            for verse, (a, b) in enumerate(zip(en, es, strict=True), start=1):
                yield f"{book.osis_name} {chapter}:{verse}", a, b


def fetch(path: str = "/usr/share/sword", max_words: int | None = None,
          drop_misaligned: bool = True) -> list[Document]:
    """Verse pairs read from the SWORD directory `path` (rules in the module docstring)."""
    if max_words is not None and max_words < 1:
        raise SeqpipeError(f"recipe.fetch.max_words={max_words}: must be a positive number of words, or null")
    english, spanish = open_bibles(path)
    rows = [(ref, clean(a), clean(b), strongs(a), strongs(b)) for ref, a, b in verses(english, spanish)]
    # Over every verse, empty ones too: the verses a shifted Spanish verse belongs to may be empty in Spanish.
    shifted = misaligned([r[3] for r in rows], [r[4] for r in rows]) if drop_misaligned else [False] * len(rows)
    docs: list[Document] = []
    empty = bad = long = 0
    for (ref, a, b, _, _), shift in zip(rows, shifted, strict=True):
        if not a or not b:
            empty += 1
        elif shift:
            bad += 1
        elif max_words is not None and max(len(a.split()), len(b.split())) > max_words:
            long += 1
        else:
            docs.append({"id": ref, "text": a, "output": b, "group": ref})
    dropped = [f"{empty} empty on one side"]
    if drop_misaligned:
        dropped.append(f"{bad} misaligned")
    if max_words is not None:
        dropped.append(f"{long} with more than {max_words} words on a side")
    print(f"bible-en-es: {len(docs):,} verse pairs ({', '.join(dropped)} dropped)", file=sys.stderr)
    if not docs:
        raise SeqpipeError(f"no verse pair left in {path}; raise recipe.fetch.max_words or set it to null")
    return docs
