"""What every served model does with a request before and around its network, with no MLflow, pandas or Lightning
in sight: tokenize, check the request against the model's limits, and generate text. The MLflow pyfunc
(seqpipe.serving.pyfunc.SeqpipeModel) builds on it, and so does the lean language model that `seqpipe generate`
loads in a fraction of that time (seqpipe.serving.local)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Iterator

import torch
from torch import nn

from seqpipe.data.batching import pad_collate
from seqpipe.data.request_checks import RequestError, check_size, fit_length, generation_params
from seqpipe.data.vocab import EOS_ID, SUPPRESS, UNK_ID
from seqpipe.models.decoding import generator
from seqpipe.models.sampling import beam, pieces, prompt_ids, stream
from seqpipe.serving.batching import GenerationEngine, RowBatcher, RowFn, Sequence

# The limits of models registered before limits were stored in the model (seqpipe 0.1). Newer models carry the
# `serve` section of the config they were registered with.
LEGACY_LIMITS = {"max_rows": 256, "max_input_tokens": 10_000, "max_total_tokens": 200_000, "max_new_tokens": 1_000,
                 "max_total_new_tokens": 4_000}
# Limits added since: a model registered before them gets conf/'s defaults of the time they were added.
DEFAULT_LIMITS = {**LEGACY_LIMITS, "max_beam_width": 16, "max_audio_seconds": 60, "max_total_audio_seconds": 600,
                  "max_audio_mb": 16, "max_request_mb": 32, "max_concurrent_requests": 32, "batch_rows": 64,
                  "batch_wait_ms": 5}


def upgrade_state_dict(state: dict) -> dict:
    """Weights saved by seqpipe 0.1's first language models (embedding/rnn at the top level) in today's layout."""
    if any(k.startswith(("embedding.", "rnn.")) for k in state) and not any(k.startswith("encoder.") for k in state):
        return {(k if k.startswith("head.") else f"encoder.{k}"): v for k, v in state.items()}
    return state


def legacy_meta(saved: dict) -> dict:
    """prepared/meta.json's content for a weights file saved before models carried it (before tasks were modules)."""
    return {"task": saved.get("task", "lm"), "inputs": {"kind": "tokens", "vocab_size": saved["vocab_size"]},
            "target": {"labels": saved.get("labels", [])}}


class Served:
    """A loaded model: `net`, `meta` (prepared/meta.json), `vocab` and `tokenizer` (text inputs), `limits`, `max_len`
    and the task's `long_inputs` policy, `unit` (what one input step is called in messages), and `model` (what answers
    name: NAME/VERSION). After `start_batching` (called once when a server loads it), the rows of concurrent requests
    share the network's calls (seqpipe.serving.batching)."""
    unit = "tokens"
    long_inputs = "cut"
    rows_net: nn.Module | None = None  # what forward_rows runs instead of `net` (ONNX Runtime, when serving so)
    _batcher: RowBatcher | None = None
    _engine: GenerationEngine | None = None

    def load_saved(self, saved: dict, meta: dict, build_net: Callable[[dict, dict], nn.Module]) -> None:
        """The network (built by the task's `build_net`) and what the weights file carries besides: the limits, the
        training data's max_len (inputs are cut as it was), the default decoding (sequence to sequence)."""
        self.meta = meta
        self.labels = meta["target"].get("labels", [])
        self.limits = {**DEFAULT_LIMITS, **saved.get("limits", {})}
        self.max_len = saved.get("max_len")
        self.decode = saved.get("decode", {})  # sequence to sequence: default beam width, length penalty, limit
        self.net = build_net(meta, saved["model"])
        self.net.load_state_dict(upgrade_state_dict(saved["state_dict"]))
        self.net.eval()

    def start_batching(self) -> None:
        """Share the network's calls between concurrent requests from now on. Called once, before any request, so the
        requests that arrive together find the one batcher (its worker threads start with the first request)."""
        self._batcher = RowBatcher(self.limits["batch_rows"], self.limits["batch_wait_ms"])
        self._engine = GenerationEngine(self.net, SUPPRESS, self.limits["batch_rows"])

    def stop_batching(self) -> None:
        """Each request on its own again (its worker threads, if started, wait idle)."""
        self._batcher = self._engine = None

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        tokenized = []
        for i, text in enumerate(texts):
            try:
                tokenized.append(self.tokenizer.tokenize(text))
            except ValueError as e:  # e.g. a letter that is not a DNA base
                raise RequestError(str(e), row=i) from None
        return tokenized

    def check_size(self, rows: list, new_per_row: int) -> list:
        """Refuse a request over the model's limits, naming the limit, before any work is done."""
        return check_size(rows, new_per_row, self.limits, self.unit)

    def encode_texts(self, texts: list[str], what: str) -> tuple[list[torch.Tensor], list[float]]:
        """Texts as token ids, checked against the limits before any work (an empty one refused: nothing to `what`),
        and the share of each row's tokens that the vocabulary does not know."""
        rows = self.check_size(self.tokenize(texts), 0)
        for i, tokens in enumerate(rows):
            if not tokens:
                raise RequestError(f"empty input text: nothing to {what}", row=i)
        xs = [torch.tensor(self.vocab.encode(tokens)) for tokens in rows]
        unk = [float((x == UNK_ID).float().mean()) for x in xs]
        for i in (i for i, u in enumerate(unk) if u == 1.0):
            warnings.warn(f"row {i}: every token is unknown to the vocabulary; the prediction carries no "
                          "information", stacklevel=2)
        return xs, unk

    def fit_length(self, xs: list) -> list:
        """Inputs longer than the training data's max_len cut, refused or read whole, as the task says."""
        return fit_length(xs, self.max_len, self.unit, self.long_inputs)

    def forward_rows(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The network's output for each input: (C,) per sequence, or (T_i, C) per step; run in padded batches of
        inputs of similar length, at most serve.batch_rows rows each."""
        order = sorted(range(len(xs)), key=lambda i: len(xs[i]))
        out: list[torch.Tensor] = [torch.empty(0)] * len(xs)
        size = max(1, int(self.limits["batch_rows"]))
        with torch.no_grad():
            for start in range(0, len(order), size):
                rows = order[start:start + size]
                batch = pad_collate([(xs[i], torch.tensor(0)) for i in rows])
                net = self.net if self.rows_net is None else self.rows_net
                y, _ = net(batch["x"], batch["lengths"])
                for k, i in enumerate(rows):
                    out[i] = y[k, :len(xs[i])] if y.dim() == 3 else y[k]
        return out

    def stream(self, prompt: str, params: dict | None = None, logprobs: list | None = None,
               bos: bool = False) -> Iterator[str]:
        """The continuation of `prompt` piece by piece, within the model's limits (for `seqpipe generate`); `bos`:
        the prompt starts a document (read after <bos>, as an empty prompt is)."""
        p = generation_params(params, self.limits)
        self.check_size(self.tokenize([prompt]), p["max_new_tokens"] * p["beam_width"])
        return self.generate(prompt, p, logprobs, bos or p["bos"])

    def generate(self, prompt: str, p: dict, logprobs: list | None = None, bos: bool = False) -> Iterator[str]:
        """The continuation in pieces: sampled (or greedy) as it comes, or with beam_width > 1 the beam's best in
        one piece; `logprobs` (a list) receives (token, log-probability) pairs; `bos` as in `stream`."""
        if p.get("beam_width", 1) > 1:
            return iter([beam(self.net, self.vocab, self.tokenizer, prompt, p["max_new_tokens"], p["beam_width"],
                              logprobs=logprobs, bos=bos)])
        return stream(self.net, self.vocab, self.tokenizer, prompt, p["max_new_tokens"], p["temperature"],
                      p["top_k"], p["seed"], logprobs, bos)

    def rows(self, key: Hashable, fn: RowFn, xs: list) -> list:
        """`fn(xs)`: one output per row; while serving, run together with concurrent requests' rows of the same `key`
        (the function and the request params its outputs depend on)."""
        if self._batcher is None:
            return fn(xs)
        return self._batcher.run(key, fn, xs)

    def continuations(self, texts: list[str], p: dict) -> list[tuple[str, list[tuple[str, float]]]]:
        """Each prompt's continuation with its (piece, log-probability) pairs, under checked generation params `p`.
        While serving, sampled and greedy rows join the running batch of every request's rows (beam search runs on
        its own, in the request's thread)."""
        engine = self._engine
        if engine is None or p.get("beam_width", 1) > 1:
            out = []
            for text in texts:
                logprobs: list[tuple[str, float]] = []
                out.append(("".join(self.generate(text, p, logprobs, p["bos"])), logprobs))
            return out
        starts = [prompt_ids(self.vocab, self.tokenizer, text, p["bos"]) for text in texts]
        rows = [Sequence(ids, p["max_new_tokens"], p["temperature"], p["top_k"], generator(p["seed"]), EOS_ID)
                for ids, _ in starts]
        engine.generate(rows)
        return [pieces(self.vocab, self.tokenizer, row.tokens, row.logprobs, separator)
                for row, (_, separator) in zip(rows, starts)]
