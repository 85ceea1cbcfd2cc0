"""Text in, text out: encode a prompt, sample from a network, decode. Shared by evaluate, `seqpipe generate` (which
prints the text as it comes) and the served model."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch

from seqpipe.nets import RecurrentLM
from seqpipe.tokenize import CharTokenizer
from seqpipe.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocab


def stream(net: RecurrentLM, vocab: Vocab, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int = 200,
           temperature: float = 1.0, top_k: int = 0, seed: int | None = None) -> Iterator[str]:
    """The continuation of `prompt`, one token's text at a time, up to `max_new_tokens` tokens or <eos>."""
    tokens = tokenizer.tokenize(prompt)
    if unknown := sorted(set(vocab.unknown(tokens))):
        warnings.warn(f"prompt characters not in the vocabulary, read as <unk>: {unknown!r}", stacklevel=2)
    ids = [BOS_ID, *vocab.encode(tokens)] if not tokens else vocab.encode(tokens)
    device = next(net.parameters()).device
    generator = torch.Generator(device=device)
    if seed is not None and seed >= 0:
        generator.manual_seed(seed)
    else:
        generator.seed()
    was_training = net.training
    net.eval()
    separator = "" if not tokens else tokenizer.separator  # words are joined by a space, characters by nothing
    try:
        for nxt in net.sample(torch.tensor([ids], device=device), max_new_tokens, temperature, top_k, generator,
                              stop_id=EOS_ID, suppress=(PAD_ID, UNK_ID, BOS_ID)):
            token = int(nxt)
            if token == EOS_ID:
                return
            yield separator + tokenizer.detokenize(vocab.decode([token]))
            separator = tokenizer.separator
    finally:
        net.train(was_training)


def complete(net: RecurrentLM, vocab: Vocab, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int = 200,
             temperature: float = 1.0, top_k: int = 0, seed: int | None = None) -> str:
    """The prompt followed by up to `max_new_tokens` sampled tokens (fewer if <eos> is sampled)."""
    return prompt + "".join(stream(net, vocab, tokenizer, prompt, max_new_tokens, temperature, top_k, seed))
