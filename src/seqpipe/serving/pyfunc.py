"""The served model: an MLflow pyfunc holding weights, prepared/meta.json (task, inputs, labels), the vocabulary for
text inputs, network config and the limits of what one request may ask. The task answers: a language model turns
prompts into generated text; a classifier returns a label with class probabilities; a tagger one tag per position;
a regressor one number per row. Inputs are text, or a `frames` column of T x F nested lists. Every answer names the
model that gave it (`model`, `run_id`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow.pyfunc
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from seqpipe.data.batching import pad_collate
from seqpipe.data.inputs import kind_of
from seqpipe.data.requests import InputError, check_rows, generation_params
from seqpipe.errors import SeqpipeError
from seqpipe.models.sampling import beam, stream
from seqpipe.serving import guard as server_guard
from seqpipe.tasks import get_task

# The limits of models registered before limits were stored in the model (seqpipe 0.1). Newer models carry the
# `serve` section of the config they were registered with.
LEGACY_LIMITS = {"max_rows": 256, "max_input_tokens": 10_000, "max_total_tokens": 200_000, "max_new_tokens": 1_000,
                 "max_total_new_tokens": 4_000}
# Limits added since: a model registered before them gets conf/'s defaults of the time they were added.
DEFAULT_LIMITS = {**LEGACY_LIMITS, "max_beam_width": 16, "max_audio_seconds": 60, "max_total_audio_seconds": 600,
                  "max_audio_mb": 16, "max_request_mb": 32}


def upgrade_state_dict(state: dict) -> dict:
    """Weights saved by seqpipe 0.1's first language models (embedding/rnn at the top level) in today's layout."""
    if any(k.startswith(("embedding.", "rnn.")) for k in state) and not any(k.startswith("encoder.") for k in state):
        return {(k if k.startswith("head.") else f"encoder.{k}"): v for k, v in state.items()}
    return state


def identity(model_dir: Path) -> tuple[str, str]:
    """(registered name/version, run id) of a downloaded model. MLflow writes `registered_model_meta` when it
    downloads a model by registry URI (alias resolved to its version), so a server started on @champion keeps
    saying which version it loaded after the alias moves."""
    def read(name: str) -> dict:
        path = model_dir / name
        return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}

    run_id = str(read("MLmodel").get("run_id") or "")
    meta = read("registered_model_meta")
    name = f"{meta['model_name']}/{meta['model_version']}" if meta.get("model_name") else f"run {run_id}"
    return name, run_id


def legacy_meta(saved: dict) -> dict:
    """prepared/meta.json's content for a weights file saved before models carried it (before tasks were modules)."""
    return {"task": saved.get("task", "lm"), "inputs": {"kind": "tokens", "vocab_size": saved["vocab_size"]},
            "target": {"labels": saved.get("labels", [])}}


class SeqpipeModel(mlflow.pyfunc.PythonModel):
    """The one served-model class: the network, the input kind that reads requests (seqpipe.data.inputs), and the
    task that answers them (seqpipe.tasks), with what the task loaded for itself in `state`."""
    unit = "tokens"  # what one input step is called in messages ("steps" for frames)

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        saved = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.meta = saved.get("meta") or legacy_meta(saved)
        self.task = get_task(self.meta["task"])
        self.kind = kind_of(self.meta["inputs"])
        self.labels = self.meta["target"].get("labels", [])
        self.column, self.unit = self.kind.column(self.task.column), self.kind.unit
        self.vocab, self.tokenizer = self.kind.load(context.artifacts)
        self.max_len = saved.get("max_len")  # inputs are cut as the training data was
        self.limits = {**DEFAULT_LIMITS, **saved.get("limits", {})}
        self.decode = saved.get("decode", {})  # sequence to sequence: default beam width, length penalty, limit
        self.net = self.task.build_net(self.meta, saved["model"])
        self.net.load_state_dict(upgrade_state_dict(saved["state_dict"]))
        self.net.eval()
        self.state = self.task.load_served(self.meta)
        self.model, self.run_id = identity(Path(context.artifacts["weights"]).parents[1])
        if server_guard.serving():  # loaded by `mlflow models serve`: bound the body, one-line error answers
            server_guard.install(self.limits)

    # No type hints on predict: MLflow would read them as an input schema; the signature is logged instead.
    def predict(self, context, model_input, params=None):  # noqa: ANN001
        """The task's answer to a request. A request the model refuses raises InputError (HTTP 400, one line);
        anything else that goes wrong is logged here and answered without its stack trace (HTTP 500)."""
        try:
            return self.task.predict(self, model_input, params).assign(model=self.model, run_id=self.run_id)
        except MlflowException:
            raise
        except SeqpipeError as e:
            raise InputError(str(e)) from None
        except MemoryError:
            raise InputError("the request needs more memory than this server has: send fewer or shorter rows") \
                from None
        except RecursionError:  # a JSON value of the request nested thousands deep
            raise InputError("a value of the request nests too deeply to be read") from None
        except Exception as e:
            server_guard.log.exception("seqpipe: %s failed on a request", self.model)
            raise MlflowException(f"seqpipe: the model could not answer this request ({type(e).__name__}, an "
                                  "internal error logged by the server)", error_code=INTERNAL_ERROR) from e

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        tokenized = []
        for i, text in enumerate(texts):
            try:
                tokenized.append(self.tokenizer.tokenize(text))
            except ValueError as e:  # e.g. a letter that is not a DNA base
                raise InputError(str(e), row=i) from None
        return tokenized

    def check_size(self, rows: list, new_per_row: int) -> list:
        """Refuse a request over the model's limits, naming the limit, before any work is done."""
        lim, unit = self.limits, self.unit
        check_rows(len(rows), lim)
        for i, row in enumerate(rows):
            if len(row) > lim["max_input_tokens"]:
                raise InputError(f"{len(row)} {unit}; this model takes at most {lim['max_input_tokens']} per row "
                                 "(serve.max_input_tokens)", row=i)
        if (total := sum(map(len, rows))) > lim["max_total_tokens"]:
            raise InputError(f"the request has {total} input {unit} in all; this model takes at most "
                             f"{lim['max_total_tokens']} (serve.max_total_tokens): split the request")
        if (new := len(rows) * new_per_row) > lim["max_total_new_tokens"]:
            raise InputError(f"the request asks for {new} new tokens ({len(rows)} rows x max_new_tokens="
                             f"{new_per_row}); this model makes at most {lim['max_total_new_tokens']} per request "
                             "(serve.max_total_new_tokens): ask for fewer rows or fewer new tokens")
        return rows

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

    def encode(self, model_input: object, what: str) -> tuple[list[torch.Tensor], list[float] | None]:
        """Every row of a request as the network's input, read by the input kind and checked against the limits
        before any work, then fitted to the training data's max_len by the task's policy; and, for text, the share
        of each row's tokens that the vocabulary does not know."""
        xs, unk = self.kind.read(self, model_input, what)
        return self.task.fit_length(xs, self.max_len, self.unit), unk

    def batches(self, model_input: object, what: str, batch_size: int = 64) -> Iterator[tuple[dict, list | None]]:
        """The request as padded batches (x, lengths) with the rows' unknown-token shares (None for frames)."""
        xs, unk = self.encode(model_input, what)
        for start in range(0, len(xs), batch_size):
            batch = pad_collate([(x, torch.tensor(0)) for x in xs[start:start + batch_size]])
            yield batch, None if unk is None else unk[start:start + batch_size]


# Models registered by the first walking-skeleton builds pickled this name; it loads them with today's code.
LanguageModel = SeqpipeModel
