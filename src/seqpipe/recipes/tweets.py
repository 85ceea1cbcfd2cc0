"""The 4,200 human-rated tweets of VADER's ground truth (the sentiment recipe's source) as language-model documents:
one document per tweet, so the model learns where a tweet starts (<bos>) and ends (<eos>).

With `condition=True` each tweet starts with its star rating (the sentiment recipe's bins of the mean human rating)
and a star, one prefix of three characters: "1★ " ... "5★ ". The model then learns the rating before the text, and a
prompt of that prefix read as the start of a tweet asks for a tweet of that rating:
`seqpipe generate --bos --prompt "1★ "`. From an empty prompt the model draws the rating first.
"""

from __future__ import annotations

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document, sentiment


def marker(stars: str) -> str:
    """The prefix of a conditioned tweet: its star label, a star and a space ("5★ ")."""
    return f"{stars}★ "


def documents(rows: list[Document], condition: bool) -> list[Document]:
    """The tweets among the sentiment recipe's rows as language-model documents (id, text), each text prefixed with
    its rating's marker when `condition`."""
    return [{"id": row["id"], "text": (marker(row["label"]) if condition else "") + row["text"]}
            for row in rows if row["source"] == "tweets"]


def fetch(package: str, version: str, sha256: str, member: str, cache_dir: str,
          condition: bool = True) -> list[Document]:
    """The tweets of the verified vaderSentiment sdist (read by the sentiment recipe), one document each."""
    docs = documents(sentiment.fetch(package, version, sha256, member, cache_dir), condition)
    if not docs:
        raise SeqpipeError(f"{member} holds no tweets; check recipe.fetch.version and member")
    return docs
