"""The served model: an MLflow pyfunc holding weights, vocabulary, labels and network config. A language model
turns prompts into generated text; a classifier returns a label with class probabilities; a tagger one tag per
position."""

from __future__ import annotations

import warnings

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

# Generation params (language models); seed -1: a fresh seed per call.
PARAMS = {"max_new_tokens": 200, "temperature": 1.0, "top_k": 0, "seed": -1}
COLUMNS = {"lm": "prompt", "classify": "text", "tag": "text"}


def texts_from(model_input: object, column: str) -> list[str]:
    """Strings from a DataFrame (column `column`, else the first), a list, a dict or a string."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0:
            raise ValueError(f"the input has no columns: send a column named {column!r}")
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
        raise ValueError(f"every {column} must be a string")
    return values


def upgrade_state_dict(state: dict) -> dict:
    """Weights saved by seqpipe 0.1's first language models (embedding/rnn at the top level) in today's layout."""
    if any(k.startswith(("embedding.", "rnn.")) for k in state):
        return {(k if k.startswith("head.") else f"encoder.{k}"): v for k, v in state.items()}
    return state


class SeqpipeModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from seqpipe.nets import build_net
        from seqpipe.tokenize import load_tokenizer
        from seqpipe.vocab import Vocab

        saved = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.task, self.labels = saved.get("task", "lm"), saved.get("labels", [])
        self.max_len = saved.get("max_len")  # inputs are cut as the training data was
        self.net = build_net(self.task, saved["vocab_size"], len(self.labels), **saved["model"])
        self.net.load_state_dict(upgrade_state_dict(saved["state_dict"]))
        self.net.eval()
        self.vocab = Vocab.load(context.artifacts["vocab"])
        self.tokenizer = load_tokenizer(self.vocab.tokenizer)

    # No type hints on predict: MLflow would read them as an input schema; the signature is logged instead.
    def predict(self, context, model_input, params=None):  # noqa: ANN001
        texts = texts_from(model_input, COLUMNS[self.task])
        if self.task == "lm":
            return self._generate(texts, {**PARAMS, **(params or {})})
        return self._label(texts)

    def _generate(self, prompts: list[str], p: dict) -> list[str]:
        from seqpipe.sampling import complete

        if int(p["max_new_tokens"]) < 0:
            raise ValueError("max_new_tokens must be >= 0")
        return [complete(self.net, self.vocab, self.tokenizer, prompt, int(p["max_new_tokens"]),
                         float(p["temperature"]), int(p["top_k"]), int(p["seed"])) for prompt in prompts]

    @torch.no_grad()
    def _label(self, texts: list[str], batch_size: int = 64) -> pd.DataFrame:
        from seqpipe.batching import pad_collate
        from seqpipe.vocab import UNK_ID

        rows = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            ids = []
            for text in chunk:
                tokens = self.tokenizer.tokenize(text)
                if not tokens:
                    raise ValueError(f"empty input text at row {start + len(ids)}: nothing to {self.task}")
                if self.max_len and len(tokens) > self.max_len and self.task == "classify":
                    warnings.warn(f"row {start + len(ids)}: {len(tokens)} tokens, read as its first {self.max_len} "
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
