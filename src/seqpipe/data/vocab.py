"""Vocab: special tokens at stable ids, build from token counts, encode/decode, save/load as JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from seqpipe.atomic import write_json
from seqpipe.data.text_tokens import load_tokenizer
from seqpipe.errors import SeqpipeError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0..3, always, in every vocabulary
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
IGNORE_INDEX = -100  # target of a padded step: never counted in a loss or a metric (torch's default)
SUPPRESS = (PAD_ID, UNK_ID, BOS_ID)  # never generated or decoded: an output is known tokens ending in <eos>


def prepared_vocab(prepared_dir: str | Path) -> Path:
    """The vocabulary file of a prepared data folder, refused with the fix when prepare has not run."""
    path = Path(prepared_dir) / "vocab.json"
    if not path.is_file():
        raise SeqpipeError(f"{path} not found: run the prepare stage first (`dvc repro prepare`)")
    return path


class Vocab:
    """Maps tokens to ids; unknown tokens map to UNK_ID."""

    def __init__(self, tokens: Sequence[str], tokenizer: dict | None = None):
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}
        if len(self.stoi) != len(tokens):
            raise ValueError("a vocabulary has a duplicate token")
        # How text was tokenized, so a saved model can tokenize prompts the same way.
        self.tokenizer = tokenizer or {"_target_": "seqpipe.data.text_tokens.CharTokenizer"}

    @classmethod
    def build(
        cls, counts: Counter, min_freq: int = 1, max_size: int | None = None, tokenizer: dict | None = None
    ) -> Vocab:
        """Most frequent first (ties broken by token, so the build is deterministic)."""
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *kept], tokenizer)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.stoi.get(t, UNK_ID) for t in tokens]

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """The tokens that `encode` would map to <unk>."""
        return [t for t in tokens if t not in self.stoi]

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if skip_specials and i < len(SPECIALS):
                continue
            out.append(self.itos[i])
        return out

    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        return np.dtype(np.uint8 if len(self) <= 2**8 else np.uint16 if len(self) <= 2**16 else np.uint32)

    def to_dict(self) -> dict:
        return {"tokens": self.itos, "tokenizer": self.tokenizer}

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        return cls(data["tokens"], data.get("tokenizer"))

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def load_with_tokenizer(path: str | Path) -> tuple[Vocab, object]:
    """A saved vocabulary and the tokenizer it names: a served model's text side."""
    vocab = Vocab.load(path)
    return vocab, load_tokenizer(vocab.tokenizer)
