"""Tokenizers: text <-> list of tokens. Chosen in config by `_target_`, stored in the vocabulary file."""

from __future__ import annotations


class CharTokenizer:
    """Every character is a token; detokenizing is concatenation, so the round trip is exact."""

    target = "seqpipe.tokenize.CharTokenizer"
    separator = ""

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def detokenize(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def config(self) -> dict:
        return {"_target_": self.target}


def load_tokenizer(config: dict) -> CharTokenizer:
    """Build the tokenizer a vocabulary file or a config names by `_target_`."""
    from hydra.utils import instantiate

    return instantiate(dict(config))
