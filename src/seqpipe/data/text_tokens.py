"""Tokenizers: text <-> list of tokens. Chosen in config by `_target_`, stored in the vocabulary file.

The module was called seqpipe.tokenize until its file shadowed the standard library's `tokenize` (for any script
run from inside the package folder); seqpipe/__init__.py keeps that name importable, for the vocabularies and
registered models that name `seqpipe.tokenize.CharTokenizer`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class CharTokenizer:
    """Every character is a token; detokenizing is concatenation, so the round trip is exact."""

    separator = ""

    def normalize(self, text: str) -> str:
        return text

    def tokenize(self, text: str) -> list[str]:
        return list(self.normalize(text))

    def codepoints(self, text: str) -> np.ndarray:
        """The tokens as Unicode code points (uint32): `tokenize` in array form, for encoding at numpy speed."""
        import numpy as np  # here, so that importing seqpipe (which aliases this module) never loads numpy

        return np.frombuffer(self.normalize(text).encode("utf-32-le", "surrogatepass"), dtype="<u4")

    def detokenize(self, tokens: list[str]) -> str:
        return "".join(tokens)


class WordTokenizer:
    """Words and punctuation marks as tokens (`it's!` -> `it ' s !`), optionally lowercased."""

    separator = " "

    def __init__(self, lowercase: bool = True, split_punct: bool = True):
        self.lowercase, self.split_punct = lowercase, split_punct
        self._pattern = re.compile(r"\w+|[^\w\s]" if split_punct else r"\S+")

    def tokenize(self, text: str) -> list[str]:
        return self._pattern.findall(text.lower() if self.lowercase else text)

    def detokenize(self, tokens: list[str]) -> str:
        return " ".join(tokens)


class DnaTokenizer(CharTokenizer):
    """Bases as tokens: upper-cased, IUPAC ambiguity codes read as N; any other letter is an error."""

    IUPAC = "RYSWKMBDHV"
    _TABLE = str.maketrans(IUPAC, "N" * len(IUPAC))
    _OTHER = re.compile("[^ACGTN]")

    def normalize(self, text: str) -> str:
        seq = text.upper().translate(self._TABLE)
        if bad := self._OTHER.search(seq):
            i = bad.start()
            raise ValueError(f"not a DNA letter: {text[i]!r} at position {i} (allowed: ACGTN and IUPAC codes "
                             f"{self.IUPAC})")
        return seq


def load_tokenizer(config: dict) -> CharTokenizer | WordTokenizer | DnaTokenizer:
    """Build the tokenizer a vocabulary file or a config names by `_target_`: one of this module's classes with
    plain arguments is built here (a served model's start-up does without Hydra, ~0.3 s), anything else by Hydra."""
    config = dict(config)
    module, _, name = str(config.get("_target_", "")).rpartition(".")
    tokenizer = globals().get(name)
    if module in (__name__, "seqpipe.tokenize") and tokenizer in TOKENIZERS and \
            all(isinstance(v, str | int | float | bool | None) and (k == "_target_" or not k.startswith("_"))
                for k, v in config.items()):
        return tokenizer(**{k: v for k, v in config.items() if k != "_target_"})
    from hydra.utils import instantiate  # lazy: `import seqpipe` aliases this module (seqpipe.tokenize), hydra ~0.3 s

    return instantiate(config)


TOKENIZERS = (CharTokenizer, WordTokenizer, DnaTokenizer)
