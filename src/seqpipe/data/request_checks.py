"""The limits a request to a served model is checked against before any work: rows, tokens, new tokens, and the
generation params. Lean on purpose (numpy, which torch loads anyway, and no MLflow or pandas): `seqpipe generate`
loads a language model without them (seqpipe.serving.local). `RequestError` refuses a request with a reason; the
served model answers it as HTTP 400 (seqpipe.data.requests.InputError)."""

from __future__ import annotations

import warnings

import numpy as np

from seqpipe.data.sampling_bounds import check_seed, check_temperature

# Generation params (language models); seed -1: a fresh seed per call; beam_width > 1: beam search (deterministic,
# temperature/top_k/seed unused); logprobs: add each new token's log-probability (column token_logprobs, JSON).
PARAMS = {"max_new_tokens": 200, "temperature": 1.0, "top_k": 0, "seed": -1, "beam_width": 1, "logprobs": False,
          "bos": False}  # bos: the prompt starts a document (a rating prefix of the tweets model)


class RequestError(ValueError):
    """A request the model refuses: `reason`, and the row (counted from 0 within the request) when one row is at
    fault."""

    def __init__(self, reason: str, row: int | None = None):
        if not hasattr(self, "seqpipe_message"):  # set already when InputError's MlflowException passes it on
            self._refuse(reason, row)
        super().__init__(self.seqpipe_message)

    def _refuse(self, reason: str, row: int | None) -> str:
        self.reason, self.row = reason, row
        # kept apart: MLflow's scoring server rewrites `message` to echo the whole request before it
        self.seqpipe_message = f"seqpipe: {'' if row is None else f'row {row}: '}{reason}"
        return self.seqpipe_message


def check_rows(n: int, limits: dict) -> None:
    if n > limits["max_rows"]:
        raise RequestError(f"{n} rows in one request; this model takes at most {limits['max_rows']} (serve.max_rows): "
                           "split the request")


def check_size(rows: list, new_per_row: int, limits: dict, unit: str = "tokens") -> list:
    """Refuse a request over the model's limits, naming the limit, before any work is done."""
    check_rows(len(rows), limits)
    for i, row in enumerate(rows):
        if len(row) > limits["max_input_tokens"]:
            raise RequestError(f"{len(row)} {unit}; this model takes at most {limits['max_input_tokens']} per row "
                               "(serve.max_input_tokens)", row=i)
    if (total := sum(map(len, rows))) > limits["max_total_tokens"]:
        raise RequestError(f"the request has {total} input {unit} in all; this model takes at most "
                           f"{limits['max_total_tokens']} (serve.max_total_tokens): split the request")
    if (new := len(rows) * new_per_row) > limits["max_total_new_tokens"]:
        raise RequestError(f"the request asks for {new} new tokens ({len(rows)} rows x max_new_tokens="
                           f"{new_per_row}); this model makes at most {limits['max_total_new_tokens']} per request "
                           "(serve.max_total_new_tokens): ask for fewer rows or fewer new tokens")
    return rows


def fit_length(xs: list, max_len: int | None, unit: str, policy: str) -> list:
    """A request's inputs (already checked against the limits) fitted to the training data's max_len by the task's
    policy for long inputs (seqpipe.tasks.rules.TaskRules.long_inputs): "cut" reads the first max_len steps (with a
    warning), "refuse" refuses the row, "read" reads every step."""
    if not max_len or policy == "read":
        return xs
    for i, x in enumerate(xs):
        if len(x) <= max_len:
            continue
        if policy == "refuse":
            raise RequestError(f"{len(x)} {unit}; this model reads inputs of at most {max_len} (prepare.max_len when "
                               "it was trained): shorten or split the input", row=i)
        warnings.warn(f"row {i}: {len(x)} {unit}, read as its first {max_len} (the training data's max_len)",
                      stacklevel=4)
        xs[i] = x[:max_len]
    return xs


def generation_params(params: dict | None, limits: dict) -> dict:
    """Generation params with defaults, checked against their ranges and the model's limits."""
    p = {**PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
    unknown = sorted(set(p) - set(PARAMS))
    if unknown:
        raise RequestError(f"unknown params {unknown}; this model takes: {', '.join(PARAMS)}")
    for key in ("max_new_tokens", "top_k", "seed", "beam_width"):
        if isinstance(p[key], bool) or not isinstance(p[key], int | np.integer):
            raise RequestError(f"{key}={p[key]!r} must be an integer")
    try:  # the ranges sampling is defined on, shared with the music models and `seqpipe generate`'s arguments
        temperature, seed = check_temperature(p["temperature"]), check_seed(p["seed"])
    except ValueError as e:
        raise RequestError(str(e)) from None
    if p["top_k"] < 0:
        raise RequestError(f"top_k={p['top_k']} must be >= 0 (0 = all tokens)")
    if not 0 <= p["max_new_tokens"] <= limits["max_new_tokens"]:
        raise RequestError(f"max_new_tokens={p['max_new_tokens']} must be between 0 and {limits['max_new_tokens']}, "
                           "this model's limit (serve.max_new_tokens when it was registered)")
    if not 1 <= p["beam_width"] <= limits.get("max_beam_width", 16):
        raise RequestError(f"beam_width={p['beam_width']} must be between 1 and {limits.get('max_beam_width', 16)} "
                           "(serve.max_beam_width when the model was registered)")
    for key in ("logprobs", "bos"):
        if not isinstance(p[key], bool | np.bool_):
            raise RequestError(f"{key}={p[key]!r} must be true or false")
    return {"max_new_tokens": int(p["max_new_tokens"]), "temperature": temperature,
            "top_k": int(p["top_k"]), "seed": seed, "beam_width": int(p["beam_width"]),
            "logprobs": bool(p["logprobs"]), "bos": bool(p["bos"])}
