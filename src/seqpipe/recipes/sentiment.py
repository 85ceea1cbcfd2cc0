"""VADER's human-rated sentences (Hutto & Gilbert, ICWSM 2014) with 1-5 star labels, from the vaderSentiment sdist.

Four sources: tweets (4,200), movie_reviews (10,605 Rotten Tomatoes snippets), amazon (3,708 review snippets) and
nyt (5,190 editorial snippets). Each sentence carries the mean rating of about 20 people on a -4..+4 scale. The star
label cuts that scale into five equal-width bins, the same for every source:
  [-4, -2.4) -> "1", [-2.4, -0.8) -> "2", [-0.8, 0.8] -> "3", (0.8, 2.4] -> "4", (2.4, 4] -> "5".
Fixed cut points keep a label's meaning independent of the sources chosen; "3" is neutral, symmetric around 0.
"""

from __future__ import annotations

import html
import io
import tarfile

from tqdm import tqdm

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document
from seqpipe.recipes.pypi import fetch_sdist

# The ground-truth files inside the inner tarball and the short source name of each.
SOURCES = {
    "tweets_GroundTruth.txt": "tweets",
    "movieReviewSnippets_GroundTruth.txt": "movie_reviews",
    "amazonReviewSnippets_GroundTruth.txt": "amazon",
    "nytEditorialSnippets_GroundTruth.txt": "nyt",
}
# Upper edges of stars 1-4: five equal-width bins over [-4, 4]; the neutral bin "3" is closed at both ends.
_CUTS = (-2.4, -0.8)


def stars(rating: float) -> str:
    """Map a mean rating in [-4, 4] to a star label "1".."5" (equal-width bins, see the module docstring)."""
    if rating < _CUTS[0]:
        return "1"
    if rating < _CUTS[1]:
        return "2"
    if rating <= -_CUTS[1]:
        return "3"
    if rating <= -_CUTS[0]:
        return "4"
    return "5"


def parse_ground_truth(text: str, source: str, filename: str) -> list[Document]:
    """Parse `id<TAB>mean rating<TAB>sentence` lines; blank lines are skipped, anything else malformed stops."""
    docs: list[Document] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        problem = ""
        if len(fields) != 3:
            problem = f"expected 3 tab-separated fields (id, rating, text), found {len(fields)}"
        else:
            try:
                rating = float(fields[1])
            except ValueError:
                rating = float("nan")
            if not -4 <= rating <= 4:  # also catches nan
                problem = f"rating {fields[1]!r} is not a number in [-4, 4]"
            elif not fields[2].strip():
                problem = "the text is empty"
        if problem:
            raise SeqpipeError(f"{filename}, line {lineno}: {problem}. The archive is not the pinned one: check "
                               "recipe.fetch.version, sha256 and member.")
        # Tweets keep HTML entities such as &amp; from the Twitter API.
        docs.append({"id": f"{source}:{fields[0]}", "text": html.unescape(fields[2].strip()),
                     "label": stars(rating), "source": source})
    return docs


def fetch(package: str, version: str, sha256: str, member: str, cache_dir: str) -> list[Document]:
    """Read the four ground-truth files from the tarball `member` of the verified sdist."""
    archive = fetch_sdist(package, version, sha256, cache_dir)
    with tarfile.open(archive, "r:gz") as tar:
        try:
            inner_bytes = tar.extractfile(member).read()  # type: ignore[union-attr]
        except KeyError:
            raise SeqpipeError(f"{archive.name} has no member {member!r}; check recipe.fetch.member") from None
    docs: list[Document] = []
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        found = {m.name.rsplit("/", 1)[-1]: m for m in inner.getmembers() if m.isfile()}
        missing = sorted(set(SOURCES) - set(found))
        if missing:
            raise SeqpipeError(f"{member} lacks {', '.join(missing)}; check recipe.fetch.version and member")
        for filename, source in tqdm(SOURCES.items(), desc="fetch", unit="file"):
            raw = inner.extractfile(found[filename]).read()  # type: ignore[union-attr]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SeqpipeError(f"{filename}: not valid utf-8 at byte offset {e.start}; the archive is not the "
                                   "pinned one: check recipe.fetch.version and sha256") from None
            docs += parse_ground_truth(text, source, filename)
    return docs
