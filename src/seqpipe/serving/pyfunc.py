"""The served model: an MLflow pyfunc holding weights, prepared/meta.json (task, inputs, labels), the vocabulary for
text inputs, network config and the limits of what one request may ask. The task answers: a language model turns
prompts into generated text; a classifier returns a label with class probabilities; a tagger one tag per position;
a regressor one number per row. Inputs are text, or a `frames` column of T x F nested lists. Every answer names the
model that gave it (`model`, `run_id`)."""

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
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from seqpipe.errors import SeqpipeError
from seqpipe.serving import guard as server_guard

# Generation params (language models); seed -1: a fresh seed per call; beam_width > 1: beam search (deterministic,
# temperature/top_k/seed unused); logprobs: add each new token's log-probability (column token_logprobs, JSON).
PARAMS = {"max_new_tokens": 200, "temperature": 1.0, "top_k": 0, "seed": -1, "beam_width": 1, "logprobs": False,
          "bos": False}  # bos: the prompt starts a document (a rating prefix of the tweets model)
WHO = {"model": ["seqpipe-x/1"], "run_id": ["0" * 32]}  # the columns naming the model, in every answer
# The limits of models registered before limits were stored in the model (seqpipe 0.1). Newer models carry the
# `serve` section of the config they were registered with.
LEGACY_LIMITS = {"max_rows": 256, "max_input_tokens": 10_000, "max_total_tokens": 200_000, "max_new_tokens": 1_000,
                 "max_total_new_tokens": 4_000}
# Limits added since: a model registered before them gets conf/'s defaults of the time they were added.
DEFAULT_LIMITS = {**LEGACY_LIMITS, "max_beam_width": 16, "max_audio_seconds": 60, "max_total_audio_seconds": 600,
                  "max_audio_mb": 16, "max_request_mb": 32}


class InputError(MlflowException, ValueError):
    """A request the model refuses. An MlflowException, so `mlflow models serve` answers HTTP 400 with this
    message (any other exception becomes a generic message, the reason buried in a stack trace)."""

    def __init__(self, reason: str, row: int | None = None):
        self.reason, self.row = reason, row  # row: counted from 0 within the request
        where = "" if row is None else f"row {row}: "
        # kept apart: MLflow's scoring server rewrites `message` to echo the whole request before it
        self.seqpipe_message = f"seqpipe: {where}{reason}"
        super().__init__(self.seqpipe_message, error_code=INVALID_PARAMETER_VALUE)


def column_values(model_input: object, column: str, limits: dict | None = None) -> list:
    """The rows of a request: a DataFrame's column `column` (else its first), a dict's `column`, a string (one row) or
    a list; with `limits`, their number is checked before anything else is done with them."""
    rows = _column_values(model_input, column)
    if limits:
        check_rows(len(rows), limits)
    return rows


def check_rows(n: int, limits: dict) -> None:
    if n > limits["max_rows"]:
        raise InputError(f"{n} rows in one request; this model takes at most {limits['max_rows']} (serve.max_rows): "
                         "split the request")


def _column_values(model_input: object, column: str) -> list:
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0:
            raise InputError(f"the input has no columns: send a column named {column!r}")
        return model_input[column if column in model_input.columns else model_input.columns[0]].tolist()
    if isinstance(model_input, dict):
        model_input = model_input.get(column, [])
    return [model_input] if isinstance(model_input, str) else list(model_input)  # type: ignore[call-overload]


def texts_from(model_input: object, column: str, limits: dict | None = None) -> list[str]:
    """Strings from a DataFrame (column `column`, else the first), a list, a dict or a string."""
    values = column_values(model_input, column, limits)
    if not all(isinstance(v, str) for v in values):
        raise InputError(f"every {column} must be a string")
    return values


def generation_params(params: dict | None, limits: dict) -> dict:
    """Generation params with defaults, checked against their ranges and the model's limits."""
    from seqpipe.data.sampling_bounds import check_seed, check_temperature

    p = {**PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
    unknown = sorted(set(p) - set(PARAMS))
    if unknown:
        raise InputError(f"unknown params {unknown}; this model takes: {', '.join(PARAMS)}")
    for key in ("max_new_tokens", "top_k", "seed", "beam_width"):
        if isinstance(p[key], bool) or not isinstance(p[key], int | np.integer):
            raise InputError(f"{key}={p[key]!r} must be an integer")
    try:  # the ranges sampling is defined on, shared with the music models and `seqpipe generate`'s arguments
        temperature, seed = check_temperature(p["temperature"]), check_seed(p["seed"])
    except ValueError as e:
        raise InputError(str(e)) from None
    if p["top_k"] < 0:
        raise InputError(f"top_k={p['top_k']} must be >= 0 (0 = all tokens)")
    if not 0 <= p["max_new_tokens"] <= limits["max_new_tokens"]:
        raise InputError(f"max_new_tokens={p['max_new_tokens']} must be between 0 and {limits['max_new_tokens']}, "
                         "this model's limit (serve.max_new_tokens when it was registered)")
    if not 1 <= p["beam_width"] <= limits.get("max_beam_width", 16):
        raise InputError(f"beam_width={p['beam_width']} must be between 1 and {limits.get('max_beam_width', 16)} "
                         "(serve.max_beam_width when the model was registered)")
    for key in ("logprobs", "bos"):
        if not isinstance(p[key], bool | np.bool_):
            raise InputError(f"{key}={p[key]!r} must be true or false")
    return {"max_new_tokens": int(p["max_new_tokens"]), "temperature": temperature,
            "top_k": int(p["top_k"]), "seed": seed, "beam_width": int(p["beam_width"]),
            "logprobs": bool(p["logprobs"]), "bos": bool(p["bos"])}


def upgrade_state_dict(state: dict) -> dict:
    """Weights saved by seqpipe 0.1's first language models (embedding/rnn at the top level) in today's layout."""
    if any(k.startswith(("embedding.", "rnn.")) for k in state) and not any(k.startswith("encoder.") for k in state):
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


def frames_from(model_input: object, column: str, features: int, limits: dict | None = None) -> list[np.ndarray]:
    """(T, F) arrays from a DataFrame (column `column`, else the first), a dict or a list of T x F nested lists;
    each row is checked (its F, ragged, non-numeric, NaN or inf, empty) and refused naming the row."""
    from seqpipe.data.inputs import frames_array

    rows = []
    for i, value in enumerate(column_values(model_input, column, limits)):
        try:
            rows.append(frames_array(value, features))
        except ValueError as e:
            raise InputError(f"{e} ({column!r}: a T x {features} list of lists of numbers per row)", row=i) from None
    return rows


def audio_from(model_input: object, spec: dict, limits: dict) -> list[np.ndarray]:
    """Log-mel frames (T, n_mels) of every clip of a request: column `audio` holds base64 audio bytes (WAV, FLAC,
    OGG), the bytes themselves, or an array of samples (then column `sample_rate` gives its rate). The work is
    bounded before it is done: the rows are counted, then every clip's size and duration (from its header) checked
    against the model's limits, and only then is any clip decoded. A silent or empty clip gives no frames."""
    from seqpipe.data.audio import AudioError, features, open_request

    clips = column_values(model_input, "audio", limits)
    rates = column_values(model_input, "sample_rate") if _has(model_input, "sample_rate") else [None] * len(clips)
    opened, max_bytes = [], int(limits["max_audio_mb"] * 1_000_000)
    for i, (clip, rate) in enumerate(zip(clips, rates)):
        rate = None if rate is None or (isinstance(rate, float) and math.isnan(rate)) else rate
        if isinstance(rate, float) and rate.is_integer():
            rate = int(rate)  # a DataFrame column of rates with a gap in it is float
        try:
            opened.append(open_request(clip, rate, max_bytes=max_bytes).check(limits["max_audio_seconds"]))
        except AudioError as e:
            raise InputError(str(e), row=i) from None
        opened[-1].name = f"row {i}"  # what the warnings call it
    if (total := sum(c.seconds for c in opened)) > limits["max_total_audio_seconds"]:
        raise InputError(f"the request holds {total:.0f} s of audio; this model transcribes at most "
                         f"{limits['max_total_audio_seconds']:g} s per request (serve.max_total_audio_seconds): split "
                         "the request")
    rows = []
    for i, clip in enumerate(opened):
        try:
            rows.append(features(clip, spec))
        except AudioError as e:
            raise InputError(str(e), row=i) from None
    return rows


def _has(model_input: object, column: str) -> bool:
    return column in model_input.columns if isinstance(model_input, pd.DataFrame) else \
        isinstance(model_input, dict) and column in model_input


def legacy_meta(saved: dict) -> dict:
    """prepared/meta.json's content for a weights file saved before models carried it (before tasks were modules)."""
    return {"task": saved.get("task", "lm"), "inputs": {"kind": "tokens", "vocab_size": saved["vocab_size"]},
            "target": {"labels": saved.get("labels", [])}}


class SeqpipeModel(mlflow.pyfunc.PythonModel):
    unit = "tokens"  # what one input step is called in messages ("steps" for frames)

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from seqpipe.data.text_tokens import load_tokenizer
        from seqpipe.data.vocab import Vocab
        from seqpipe.tasks import get_task

        saved = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.meta = saved.get("meta") or legacy_meta(saved)
        self.task = get_task(self.meta["task"])
        self.labels = self.meta["target"].get("labels", [])
        self.frames = self.meta["inputs"]["kind"] == "frames"
        self.column, self.unit = ("frames", "steps") if self.frames else (self.task.column, "tokens")
        self.audio = self.meta["inputs"].get("audio")  # frames computed from audio: requests may send the audio
        if self.audio:
            self.column = "audio"
        self.max_len = saved.get("max_len")  # inputs are cut as the training data was
        self.limits = {**DEFAULT_LIMITS, **saved.get("limits", {})}
        self.decode = saved.get("decode", {})  # sequence to sequence: default beam width, length penalty, limit
        self.net = self.task.build_net(self.meta, saved["model"])
        self.net.load_state_dict(upgrade_state_dict(saved["state_dict"]))
        self.net.eval()
        if "vocab" in context.artifacts:
            self.vocab = Vocab.load(context.artifacts["vocab"])
            self.tokenizer = load_tokenizer(self.vocab.tokenizer)
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
        from seqpipe.models.sampling import beam, stream

        if p.get("beam_width", 1) > 1:
            return iter([beam(self.net, self.vocab, self.tokenizer, prompt, p["max_new_tokens"], p["beam_width"],
                              logprobs=logprobs, bos=bos)])
        return stream(self.net, self.vocab, self.tokenizer, prompt, p["max_new_tokens"], p["temperature"],
                      p["top_k"], p["seed"], logprobs, bos)

    def encode(self, model_input: object, what: str) -> tuple[list[torch.Tensor], list[float] | None]:
        """Every row of a request as the network's input, checked against the limits before any work: (T,) ids or
        (T, F) frames, cut to the training data's max_len where the task reads a prefix; and, for text, the share
        of each row's tokens that the vocabulary does not know."""
        from seqpipe.data.vocab import UNK_ID

        if self.audio and not _has(model_input, "frames"):
            rows = self.check_size(audio_from(model_input, self.audio, self.limits), 0)
            xs, unk = [torch.from_numpy(r) for r in rows], None
        elif self.frames:
            rows = self.check_size(frames_from(model_input, "frames", self.meta["inputs"]["features"], self.limits), 0)
            xs, unk = [torch.from_numpy(r) for r in rows], None
        else:
            rows = self.check_size(self.tokenize(texts_from(model_input, self.column, self.limits)), 0)
            for i, tokens in enumerate(rows):
                if not tokens:
                    raise InputError(f"empty input text: nothing to {what}", row=i)
            xs = [torch.tensor(self.vocab.encode(tokens)) for tokens in rows]
            unk = [float((x == UNK_ID).float().mean()) for x in xs]
            for i in (i for i, u in enumerate(unk) if u == 1.0):
                warnings.warn(f"row {i}: every token is unknown to the vocabulary; the prediction carries no "
                              "information", stacklevel=3)
        if self.max_len and self.task.refuses_long:
            for i, x in enumerate(xs):
                if len(x) > self.max_len:
                    raise InputError(f"{len(x)} {self.unit}; this model reads inputs of at most {self.max_len} "
                                     "(prepare.max_len when it was trained): shorten or split the input", row=i)
        if self.max_len and self.task.reads_prefix:
            for i, x in enumerate(xs):
                if len(x) > self.max_len:
                    warnings.warn(f"row {i}: {len(x)} {self.unit}, read as its first {self.max_len} (the training "
                                  "data's max_len)", stacklevel=3)
                    xs[i] = x[: self.max_len]
        return xs, unk

    def batches(self, model_input: object, what: str, batch_size: int = 64) -> Iterator[tuple[dict, list | None]]:
        """The request as padded batches (x, lengths) with the rows' unknown-token shares (None for frames)."""
        from seqpipe.data.batching import pad_collate

        xs, unk = self.encode(model_input, what)
        for start in range(0, len(xs), batch_size):
            batch = pad_collate([(x, torch.tensor(0)) for x in xs[start:start + batch_size]])
            yield batch, None if unk is None else unk[start:start + batch_size]


# Models registered by the first walking-skeleton builds pickled this name; it loads them with today's code.
LanguageModel = SeqpipeModel


def example_input(cfg: object, meta: dict, task: object) -> pd.DataFrame:
    """The input example logged with a model: the config's prompt for text, a short series of zeros for frames, a
    tenth of a second of a 440 Hz tone for audio (base64 WAV)."""
    if meta["inputs"].get("audio"):
        from seqpipe.data.audio import wav_base64

        rate = meta["inputs"]["audio"]["sample_rate"]
        tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(rate // 10) / rate)
        return pd.DataFrame({"audio": [wav_base64(tone, rate)]})
    if meta["inputs"]["kind"] == "frames":
        return pd.DataFrame({"frames": [[[0.0] * meta["inputs"]["features"]] * 4]})
    return pd.DataFrame({task.column: [cfg.evaluate.prompt]})  # type: ignore[attr-defined]


def infer(example: pd.DataFrame, output: pd.DataFrame, params: dict | None = None) -> object:
    """MLflow's signature of a served model. A `frames` column takes any value: the model checks each row itself and
    names the row and the problem (MLflow's array schema would refuse integers and say only "column ''")."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    signature = infer_signature(example, output, params=params)
    if "audio" in example.columns:  # a path, base64 bytes or samples (with sample_rate); or frames, as computed
        columns = [ColSpec(AnyType(), "audio", required=False), ColSpec("long", "sample_rate", required=False),
                   ColSpec(AnyType(), "frames", required=False)]
        signature = ModelSignature(Schema(columns), signature.outputs, signature.params)
    elif "frames" in example.columns:
        signature = ModelSignature(Schema([ColSpec(AnyType(), "frames")]), signature.outputs, signature.params)
    return signature
