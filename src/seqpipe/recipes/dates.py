"""Human-readable dates to ISO 8601 (YYYY-MM-DD): the classic attention exercise, generated, no download.

Each row is one random date (Faker, seeded, uniform over the days from 1 January of `start` to 31 December of `end`)
written by Babel with the CLDR data of a random locale in a random format: text = the date as Babel writes it (case
and spacing kept), output = the ISO date, group = the text, id = "<locale>|<format>|<n>" (the format as given,
e.g. "long" or "d MMM y"; n counts the rows), so that a row can be checked by formatting its output again.

Rules, so that every text names exactly one date:
- Two-digit years (the CLDR short formats of en_US, de_DE, es_ES, it_IT use `yy`) are written with all digits:
  over 1900-2099, "05" would be 1905 or 2005.
- A format must show the year (y), the month (M or L) and the day of the month (d).
- Texts are distinct: a draw whose text is already in the data is drawn anew.
- Digits-only texts can read two ways across locales: "3/4/2005" is 4 March in en_US (M/d/y) and 3 April in es_ES
  (d/M/y), "11/12/1999" is 12 November in en_US and 11 December in en_GB (dd/MM/y). A text that another digits-only
  format in use writes for the date with day and month swapped is drawn anew (and counted on stderr), so no text
  in the data could mean another date under the formats in use (this skews the en_US and es_ES short
  formats a little towards days above 12).
Rows depend only on the arguments and the pinned Faker and Babel versions (CLDR data): not on the machine's time
zone, which Faker's date_between_dates does depend on (it goes through local time), hence the UTC datetimes here.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, date, datetime

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, get_date_format
from faker import Faker

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document

NAMED = ("short", "medium", "long", "full")
# Quoted literals ('de', '' for a quote) are not pattern letters.
_QUOTED = re.compile(r"'(?:[^']|'')*'")
_SHORT_YEAR = re.compile(r"(?<![yY])yy(?![yY])")
MAX_TRIES = 20  # draws per requested row before giving up on distinct texts
LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR"]
# The four CLDR lengths and a few patterns common in writing (field symbols: y year, M month, d day, E weekday).
FORMATS = [*NAMED, "d MMM y", "d MMMM y", "dd MMM y", "MMMM d, y", "EEE d MMMM y", "dd.MM.y"]


def pattern_of(fmt: str, locale: Locale) -> str:
    """The CLDR pattern of a named format (or the custom pattern itself), two-digit years widened to all digits."""
    pattern = get_date_format(fmt, locale=locale).pattern if fmt in NAMED else fmt
    parts = re.split(f"({_QUOTED.pattern})", pattern)
    return "".join(p if i % 2 else _SHORT_YEAR.sub("y", p) for i, p in enumerate(parts))


def check_format(fmt: str, locale: Locale) -> str:
    """The widened pattern of `fmt` in `locale`, or a SeqpipeError when it cannot name a date unambiguously."""
    pattern = pattern_of(fmt, locale)
    letters = _QUOTED.sub("", pattern)
    # "y", not "Y": Y is the week-based year, one off around New Year (a common slip in date exercises).
    year = "year (y; Y is the week-based year)" if "Y" in letters else "year (y)"
    missing = [name for name, chars in ((year, "y"), ("month (M or L)", "ML"), ("day (d)", "d"))
               if not any(c in letters for c in chars)]
    if missing:
        raise SeqpipeError(f"date format {fmt!r} ({locale}: {pattern!r}) does not show the {', '.join(missing)}; "
                           "every format in recipe.fetch.formats must show year, month and day (see "
                           "https://unicode.org/reports/tr35/tr35-dates.html#Date_Field_Symbol_Table)")
    try:
        format_date(date(2001, 2, 3), pattern, locale=locale)
    except Exception as e:  # Babel raises several types for a bad pattern
        raise SeqpipeError(f"date format {fmt!r} in recipe.fetch.formats is not a CLDR date pattern: {e}") from None
    return pattern


def swapped_reading(day: date, text: str, numeric: list[tuple[Locale, str]]) -> bool:
    """Whether a digits-only format in `numeric` writes `text` for `day` with its day and month swapped."""
    if day.day > 12 or day.day == day.month or any(c.isalpha() for c in text):
        return False
    other = day.replace(month=day.day, day=day.month)
    return any(format_date(other, pattern, locale=locale) == text for locale, pattern in numeric)


def fetch(n: int = 50000, seed: int = 0, locales: list[str] | None = None, formats: list[str] | None = None,
          start: int = 1900, end: int = 2099) -> list[Document]:
    """`n` distinct date texts and their ISO dates (rules in the module docstring)."""
    locales = list(locales or LOCALES)
    formats = list(formats or FORMATS)
    if n < 1:
        raise SeqpipeError(f"recipe.fetch.n={n}: must be a positive number of rows")
    if not 1 <= start <= end <= 9998:
        raise SeqpipeError(f"recipe.fetch.start={start}, end={end}: need 1 <= start <= end <= 9998 (years)")
    patterns: dict[tuple[str, str], tuple[Locale, str]] = {}
    for name in locales:
        try:
            locale = Locale.parse(name)
        except (UnknownLocaleError, ValueError) as e:
            raise SeqpipeError(f"unknown locale {name!r} in recipe.fetch.locales ({e}); use CLDR names such as "
                               "en_US, de_DE, fr_FR") from None
        for fmt in formats:
            patterns[name, fmt] = locale, check_format(fmt, locale)
    # Formats that write a date with digits only: the only ones whose texts can read as another date.
    numeric = [(locale, pattern) for locale, pattern in patterns.values()
               if not any(c.isalpha() for c in format_date(date(2001, 2, 3), pattern, locale=locale))]
    fake = Faker()
    fake.seed_instance(seed)
    rng = fake.random
    first = datetime(start, 1, 1, tzinfo=UTC)
    last = datetime(end, 12, 31, 23, 59, 59, tzinfo=UTC)
    taken: set[str] = set()
    docs: list[Document] = []
    ambiguous = 0
    for _ in range(MAX_TRIES * n):
        day = fake.date_time_between_dates(first, last, tzinfo=UTC).date()
        name, fmt = rng.choice(locales), rng.choice(formats)
        locale, pattern = patterns[name, fmt]
        text = format_date(day, pattern, locale=locale)
        if text in taken:
            continue
        if swapped_reading(day, text, numeric):
            ambiguous += 1
            continue
        taken.add(text)
        docs.append({"id": f"{name}|{fmt}|{len(docs)}", "text": text, "output": day.isoformat(), "group": text})
        if len(docs) == n:
            break
    else:
        raise SeqpipeError(f"only {len(docs)} distinct date texts after {MAX_TRIES * n} draws, fewer than "
                           f"recipe.fetch.n={n}: lower n, or add years, locales or formats")
    if ambiguous:
        print(f"dates: drew {ambiguous} text{'s' * (ambiguous != 1)} again that another numeric format in use writes "
              "for another date (day and month swapped: 3/4/2005 is 4 March in en_US, 3 April in es_ES)",
              file=sys.stderr)
    return docs
