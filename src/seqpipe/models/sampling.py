"""Text in, text out for a language model: encode a prompt, decode with seqpipe.models.decoding (sampling, greedy or
beam search), detokenize. Shared by evaluate, `seqpipe generate` (which prints the text as it comes) and the served
model."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch

from seqpipe.data.text_tokens import CharTokenizer
from seqpipe.data.vocab import BOS_ID, EOS_ID, SUPPRESS, Vocab
from seqpipe.models.decoding import beam_search, generator, sample
from seqpipe.models.nets import RecurrentLM, State, select_state

# How a fresh state reads the start of a document: in the training streams every document but the first follows the
# previous one's <eos>, so <eos> <bos> reads like a document boundary. (On the tweets model a tweet's first character
# was one no tweet starts with, such as "9", with probability 0.33 after <bos> alone; 0.007 after <eos> <bos>.)
START = (EOS_ID, BOS_ID)


def prompt_ids(vocab: Vocab, tokenizer: CharTokenizer, prompt: str, bos: bool = False) -> tuple[list[int], str]:
    """The ids a prompt is read as, and the separator before the first new token (none after an empty prompt). An
    empty prompt, or any prompt with `bos`, is read after <eos> <bos> (START), as the start of a document (e.g. a
    tweet's rating prefix); otherwise as text from within one."""
    tokens = tokenizer.tokenize(prompt)
    if unknown := sorted(set(vocab.unknown(tokens))):
        warnings.warn(f"prompt characters not in the vocabulary, read as <unk>: {unknown!r}", stacklevel=4)
    ids = [*START, *vocab.encode(tokens)] if bos or not tokens else vocab.encode(tokens)
    return ids, "" if not tokens else tokenizer.separator


def _start(net: RecurrentLM, vocab: Vocab, tokenizer: CharTokenizer, prompt: str,
           bos: bool = False) -> tuple[torch.Tensor, State, str]:
    """The prompt read in one pass (see `prompt_ids`): the next token's logits (1, V), the state, and the separator
    before the first new token."""
    ids, separator = prompt_ids(vocab, tokenizer, prompt, bos)
    logits, state = net(torch.tensor([ids], device=next(net.parameters()).device))
    return logits[:, -1], state, separator


def pieces(vocab: Vocab, tokenizer: CharTokenizer, tokens: list[int], logprobs: list[float],
           separator: str) -> tuple[str, list[tuple[str, float]]]:
    """New tokens as the text `stream` yields for them (the first after `separator`), and (piece, log-probability)
    pairs."""
    texts = [tokenizer.detokenize(vocab.decode([t])) for t in tokens]
    text = (separator + tokenizer.separator.join(texts)) if texts else ""
    return text, list(zip(texts, logprobs))


def stream(net: RecurrentLM, vocab: Vocab, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int = 200,
           temperature: float = 1.0, top_k: int = 0, seed: int | None = None,
           logprobs: list[tuple[str, float]] | None = None, bos: bool = False) -> Iterator[str]:
    """The continuation of `prompt`, one token's text at a time, up to `max_new_tokens` tokens or <eos>. Given a
    list, `logprobs` receives each new token with its log-probability under the model. `bos`: the prompt starts a
    document (see `_start`)."""
    gen = generator(seed, next(net.parameters()).device)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            logits, state, separator = _start(net, vocab, tokenizer, prompt, bos)
            for nxt, lp in sample(net.step, logits, state, max_new_tokens, temperature, top_k, gen,
                                  stop_id=EOS_ID, suppress=SUPPRESS):
                token = int(nxt[0])
                if token == EOS_ID:
                    return
                piece = tokenizer.detokenize(vocab.decode([token]))
                if logprobs is not None:
                    logprobs.append((piece, float(lp[0])))
                yield separator + piece
                separator = tokenizer.separator
    finally:
        net.train(was_training)


def beam(net: RecurrentLM, vocab: Vocab, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int = 200,
         width: int = 5, alpha: float = 1.0, logprobs: list[tuple[str, float]] | None = None,
         bos: bool = False) -> str:
    """The most likely continuation of `prompt` that beam search finds (up to `max_new_tokens` tokens, ending at
    <eos> or there), as text; `logprobs` and `bos` as in `stream`."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            logits, state, separator = _start(net, vocab, tokenizer, prompt, bos)
            (best, *_), = beam_search(net.step, select_state, logits, state, width, max_new_tokens, EOS_ID, alpha,
                                      suppress=SUPPRESS)
    finally:
        net.train(was_training)
    pieces = [tokenizer.detokenize(vocab.decode([t])) for t in best.tokens]
    if logprobs is not None:
        logprobs += list(zip(pieces, best.logprobs))
    return (separator + tokenizer.separator.join(pieces)) if pieces else ""


def complete(net: RecurrentLM, vocab: Vocab, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int = 200,
             temperature: float = 1.0, top_k: int = 0, seed: int | None = None, bos: bool = False) -> str:
    """The prompt followed by up to `max_new_tokens` sampled tokens (fewer if <eos> is sampled); `bos` as in
    `stream`."""
    return prompt + "".join(stream(net, vocab, tokenizer, prompt, max_new_tokens, temperature, top_k, seed, bos=bos))
