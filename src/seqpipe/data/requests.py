"""What a request to a served model holds and may ask, checked before any work: its rows (counted first), each
row's text, frames or audio, the generation params; `InputError` refuses one with a reason (HTTP 400). Shared by
the served model (seqpipe.serving.pyfunc), the input kinds (seqpipe.data.inputs), the tasks' `predict`, and the
command line, which refuses what a server would."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from seqpipe.data.audio import AudioError, features, open_request
from seqpipe.data.frames import frames_array
from seqpipe.data.sampling_bounds import check_seed, check_temperature

# Generation params (language models); seed -1: a fresh seed per call; beam_width > 1: beam search (deterministic,
# temperature/top_k/seed unused); logprobs: add each new token's log-probability (column token_logprobs, JSON).
PARAMS = {"max_new_tokens": 200, "temperature": 1.0, "top_k": 0, "seed": -1, "beam_width": 1, "logprobs": False,
          "bos": False}  # bos: the prompt starts a document (a rating prefix of the tweets model)
WHO = {"model": ["seqpipe-x/1"], "run_id": ["0" * 32]}  # the columns naming the model, in every answer


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
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0:
            raise InputError(f"the input has no columns: send a column named {column!r}")
        rows = model_input[column if column in model_input.columns else model_input.columns[0]].tolist()
    else:
        if isinstance(model_input, dict):
            model_input = model_input.get(column, [])
        rows = [model_input] if isinstance(model_input, str) else list(model_input)  # type: ignore[call-overload]
    if limits:
        check_rows(len(rows), limits)
    return rows


def check_rows(n: int, limits: dict) -> None:
    if n > limits["max_rows"]:
        raise InputError(f"{n} rows in one request; this model takes at most {limits['max_rows']} (serve.max_rows): "
                         "split the request")


def texts_from(model_input: object, column: str, limits: dict | None = None) -> list[str]:
    """Strings from a DataFrame (column `column`, else the first), a list, a dict or a string."""
    values = column_values(model_input, column, limits)
    if not all(isinstance(v, str) for v in values):
        raise InputError(f"every {column} must be a string")
    return values


def generation_params(params: dict | None, limits: dict) -> dict:
    """Generation params with defaults, checked against their ranges and the model's limits."""
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


def frames_from(model_input: object, column: str, features: int, limits: dict | None = None) -> list[np.ndarray]:
    """(T, F) arrays from a DataFrame (column `column`, else the first), a dict or a list of T x F nested lists;
    each row is checked (its F, ragged, non-numeric, NaN or inf, empty) and refused naming the row."""
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
    clips = column_values(model_input, "audio", limits)
    rates = column_values(model_input, "sample_rate") if has_column(model_input, "sample_rate") else [None] * len(clips)
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


def has_column(model_input: object, column: str) -> bool:
    return column in model_input.columns if isinstance(model_input, pd.DataFrame) else \
        isinstance(model_input, dict) and column in model_input
