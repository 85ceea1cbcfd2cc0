"""Text in, text out: encode a prompt, sample from a network, decode. Shared by evaluate and the served model."""

from __future__ import annotations

import warnings

import torch

from seqpipe.nets import RecurrentLM
from seqpipe.tokenize import CharTokenizer
from seqpipe.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocab


def complete(net: RecurrentLM, vocab: Vocab, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int = 200,
             temperature: float = 1.0, top_k: int = 0, seed: int | None = None) -> str:
    """The prompt followed by up to `max_new_tokens` sampled tokens (fewer if <eos> is sampled)."""
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
    try:
        new = net.generate(torch.tensor([ids], device=device), max_new_tokens, temperature, top_k,
                           generator, stop_id=EOS_ID,
                           suppress=(PAD_ID, UNK_ID, BOS_ID))
    finally:
        net.train(was_training)
    out = new[0].tolist()
    if EOS_ID in out:
        out = out[: out.index(EOS_ID)]
    return prompt + tokenizer.detokenize(vocab.decode(out))
