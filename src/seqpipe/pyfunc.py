"""The served model: an MLflow pyfunc holding weights, vocabulary, labels, network config and the limits of what
one request may ask. A language model turns prompts into generated text; a classifier returns a label with class
probabilities; a tagger one tag per position. Every answer names the model that gave it (`model`, `run_id`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

# Generation params (language models); seed -1: a fresh seed per call.
PARAMS = {"max_new_tokens": 200, "temperature": 1.0, "top_k": 0, "seed": -1}
COLUMNS = {"lm": "prompt", "classify": "text", "tag": "text"}
# The limits of models registered before limits were stored in the model (seqpipe 0.1). Newer models carry the
# `serve` section of the config they were registered with.
LEGACY_LIMITS = {"max_rows": 256, "max_input_tokens": 10_000, "max_total_tokens": 200_000, "max_new_tokens": 1_000,
                 "max_total_new_tokens": 4_000}


class InputError(MlflowException, ValueError):
    """A request the model refuses. An MlflowException, so `mlflow models serve` answers HTTP 400 with this
    message (any other exception becomes a generic message, the reason buried in a stack trace)."""

    def __init__(self, reason: str, row: int | None = None):
        self.reason, self.row = reason, row  # row: counted from 0 within the request
        where = "" if row is None else f"row {row}: "
        super().__init__(f"seqpipe: {where}{reason}", error_code=INVALID_PARAMETER_VALUE)


def texts_from(model_input: object, column: str) -> list[str]:
    """Strings from a DataFrame (column `column`, else the first), a list, a dict or a string."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0:
            raise InputError(f"the input has no columns: send a column named {column!r}")
        col = column if column in model_input.columns else model_input.columns[0]
        values = model_input[col].tolist()
    elif isinstance(model_input, dict):
        values = model_input.get(column, [])
        values = [values] if isinstance(values, str) else list(values)
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        values = list(model_input)  # type: ignore[call-overload]
    if not all(isinstance(v, str) for v in values):
        raise InputError(f"every {column} must be a string")
    return values


def generation_params(params: dict | None, limits: dict) -> dict:
    """Generation params with defaults, checked against their ranges and the model's limits."""
    p = {**PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
    unknown = sorted(set(p) - set(PARAMS))
    if unknown:
        raise InputError(f"unknown params {unknown}; this model takes: {', '.join(PARAMS)}")
    for key in ("max_new_tokens", "top_k", "seed"):
        if isinstance(p[key], bool) or not isinstance(p[key], int | np.integer):
            raise InputError(f"{key}={p[key]!r} must be an integer")
    if not isinstance(p["temperature"], int | float) or not math.isfinite(p["temperature"]) or p["temperature"] < 0:
        raise InputError(f"temperature={p['temperature']!r} must be a number >= 0 (0 = greedy)")
    if p["top_k"] < 0:
        raise InputError(f"top_k={p['top_k']} must be >= 0 (0 = all tokens)")
    if p["seed"] < -1:
        raise InputError(f"seed={p['seed']} must be >= 0, or -1 for a fresh seed")
    if not 0 <= p["max_new_tokens"] <= limits["max_new_tokens"]:
        raise InputError(f"max_new_tokens={p['max_new_tokens']} must be between 0 and {limits['max_new_tokens']}, "
                         "this model's limit (serve.max_new_tokens when it was registered)")
    return {"max_new_tokens": int(p["max_new_tokens"]), "temperature": float(p["temperature"]),
            "top_k": int(p["top_k"]), "seed": int(p["seed"])}


def upgrade_state_dict(state: dict) -> dict:
    """Weights saved by seqpipe 0.1's first language models (embedding/rnn at the top level) in today's layout."""
    if any(k.startswith(("embedding.", "rnn.")) for k in state):
        return {(k if k.startswith("head.") else f"encoder.{k}"): v for k, v in state.items()}
    return state


def identity(model_dir: Path) -> tuple[str, str]:
    """(registered name/version, run id) of a downloaded model. MLflow writes `registered_model_meta` when it
    downloads a model by registry URI (alias resolved to its version), so a server started on @champion keeps
    saying which version it loaded after the alias moves."""
    import yaml

    def read(name: str) -> dict:
        path = model_dir / name
        return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}

    run_id = str(read("MLmodel").get("run_id") or "")
    meta = read("registered_model_meta")
    name = f"{meta['model_name']}/{meta['model_version']}" if meta.get("model_name") else f"run {run_id}"
    return name, run_id


class SeqpipeModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from seqpipe.nets import build_net
        from seqpipe.tokenize import load_tokenizer
        from seqpipe.vocab import Vocab

        saved = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.task, self.labels = saved.get("task", "lm"), saved.get("labels", [])
        self.max_len = saved.get("max_len")  # inputs are cut as the training data was
        self.limits = {**LEGACY_LIMITS, **saved.get("limits", {})}
        self.net = build_net(self.task, saved["vocab_size"], len(self.labels), **saved["model"])
        self.net.load_state_dict(upgrade_state_dict(saved["state_dict"]))
        self.net.eval()
        self.vocab = Vocab.load(context.artifacts["vocab"])
        self.tokenizer = load_tokenizer(self.vocab.tokenizer)
        self.model, self.run_id = identity(Path(context.artifacts["weights"]).parents[1])

    # No type hints on predict: MLflow would read them as an input schema; the signature is logged instead.
    def predict(self, context, model_input, params=None):  # noqa: ANN001
        texts = texts_from(model_input, COLUMNS[self.task])
        if self.task == "lm":
            p = generation_params(params, self.limits)
            self.check_size(self.tokenize(texts), p["max_new_tokens"])
            out = pd.DataFrame({"text": [t + "".join(self._stream(t, p)) for t in texts]})
        else:
            out = self._label(self.check_size(self.tokenize(texts), 0))
        return out.assign(model=self.model, run_id=self.run_id)

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        tokenized = []
        for i, text in enumerate(texts):
            try:
                tokenized.append(self.tokenizer.tokenize(text))
            except ValueError as e:  # e.g. a letter that is not a DNA base
                raise InputError(str(e), row=i) from None
        return tokenized

    def check_size(self, tokenized: list[list[str]], new_per_row: int) -> list[list[str]]:
        """Refuse a request over the model's limits, naming the limit, before any work is done."""
        lim = self.limits
        if len(tokenized) > lim["max_rows"]:
            raise InputError(f"{len(tokenized)} rows in one request; this model takes at most {lim['max_rows']} "
                             "(serve.max_rows): split the request")
        for i, tokens in enumerate(tokenized):
            if len(tokens) > lim["max_input_tokens"]:
                raise InputError(f"{len(tokens)} tokens; this model takes at most {lim['max_input_tokens']} per row "
                                 "(serve.max_input_tokens)", row=i)
        if (total := sum(map(len, tokenized))) > lim["max_total_tokens"]:
            raise InputError(f"the request has {total} input tokens in all; this model takes at most "
                             f"{lim['max_total_tokens']} (serve.max_total_tokens): split the request")
        if (new := len(tokenized) * new_per_row) > lim["max_total_new_tokens"]:
            raise InputError(f"the request asks for {new} new tokens ({len(tokenized)} rows x max_new_tokens="
                             f"{new_per_row}); this model makes at most {lim['max_total_new_tokens']} per request "
                             "(serve.max_total_new_tokens): ask for fewer rows or fewer new tokens")
        return tokenized

    def stream(self, prompt: str, params: dict | None = None) -> Iterator[str]:
        """The continuation of `prompt` piece by piece, within the model's limits (for `seqpipe generate`)."""
        p = generation_params(params, self.limits)
        self.check_size(self.tokenize([prompt]), p["max_new_tokens"])
        return self._stream(prompt, p)

    def _stream(self, prompt: str, p: dict) -> Iterator[str]:
        from seqpipe.sampling import stream

        return stream(self.net, self.vocab, self.tokenizer, prompt, p["max_new_tokens"], p["temperature"],
                      p["top_k"], p["seed"])

    @torch.no_grad()
    def _label(self, tokenized: list[list[str]], batch_size: int = 64) -> pd.DataFrame:
        from seqpipe.batching import pad_collate
        from seqpipe.vocab import UNK_ID

        rows = []
        for start in range(0, len(tokenized), batch_size):
            ids = []
            for i, tokens in enumerate(tokenized[start:start + batch_size], start):
                if not tokens:
                    raise InputError(f"empty input text: nothing to {self.task}", row=i)
                if self.max_len and len(tokens) > self.max_len and self.task == "classify":
                    warnings.warn(f"row {i}: {len(tokens)} tokens, read as its first {self.max_len} "
                                  "(the training data's max_len)", stacklevel=2)
                    tokens = tokens[: self.max_len]
                ids.append(torch.tensor(self.vocab.encode(tokens)))
            batch = pad_collate([(i, torch.tensor(0)) for i in ids])
            logits, _ = self.net(batch["x"], batch["lengths"])
            probs = torch.softmax(logits, -1).numpy()  # (B, C) or (B, T, C)
            for i, seq in enumerate(ids):
                unk = float((seq == UNK_ID).float().mean())
                if unk == 1.0:
                    warnings.warn(f"row {start + i}: every token is unknown to the vocabulary; the prediction "
                                  "carries no information", stacklevel=2)
                if self.task == "classify":
                    rows.append({"label": self.labels[int(probs[i].argmax())], "unk_fraction": unk,
                                 **{f"prob_{c}": float(probs[i][k]) for k, c in enumerate(self.labels)}})
                else:
                    tags = [self.labels[k] for k in probs[i, : len(seq)].argmax(-1)]
                    sep = "" if all(len(t) == 1 for t in self.labels) else " "
                    rows.append({"tags": sep.join(tags), "unk_fraction": unk,
                                 "confidence": float(np.mean(probs[i, : len(seq)].max(-1)))})
        return pd.DataFrame(rows)


# Models registered by the first walking-skeleton builds pickled this name; it loads them with today's code.
LanguageModel = SeqpipeModel
