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
from seqpipe.data.request_checks import RequestError, check_rows

WHO = {"model": ["seqpipe-x/1"], "run_id": ["0" * 32]}  # the columns naming the model, in every answer


class InputError(MlflowException, RequestError):
    """A request the model refuses. An MlflowException, so `mlflow models serve` answers HTTP 400 with this
    message (any other exception becomes a generic message, the reason buried in a stack trace)."""

    def __init__(self, reason: str, row: int | None = None):
        MlflowException.__init__(self, self._refuse(reason, row), error_code=INVALID_PARAMETER_VALUE)


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


def texts_from(model_input: object, column: str, limits: dict | None = None) -> list[str]:
    """Strings from a DataFrame (column `column`, else the first), a list, a dict or a string."""
    values = column_values(model_input, column, limits)
    if not all(isinstance(v, str) for v in values):
        raise InputError(f"every {column} must be a string")
    return values


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
