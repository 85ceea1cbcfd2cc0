"""What `mlflow models serve` sends back to a client, made safe. MLflow's scoring server (3.x) reads the whole body,
parses it and calls the model; on an error it answers with the exception's message prefixed by the request itself
("Failed to predict data '<the request>'") and, for any exception that is not an MlflowException, its stack trace,
which names the server's files. When a seqpipe model is loaded by that server, `install` wraps the server's
`invocations` so that:

- a body over the model's `serve.max_request_mb` is refused (HTTP 413) before it is parsed;
- every error answer carries one line, the reason, with no stack trace, no server path and no echo of the request;
- an error of the server's own parsing (bad JSON, a column of the wrong type) keeps its 4xx status.

The model itself never opens a file, URL or device named in a request (docs/serving.md); this module only shapes
the answers. It patches one function of a pinned MLflow and checks that it is there; with another MLflow it warns
and leaves the server as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, ErrorCode

log = logging.getLogger("seqpipe.serve")
SERVER = "mlflow.pyfunc.scoring_server"
MAX_MESSAGE = 500  # characters of a reason sent back; longer ones are cut
SCHEMA = re.compile(r"Failed to enforce schema of data .*with schema '(\[[^\n]*?\])'\. Error: (.*)", re.S)


def serving() -> bool:
    """True inside `mlflow models serve`, whose app module imports the model while it is itself being imported."""
    return f"{SERVER}.app" in sys.modules


def batching() -> bool:
    """Whether a server batches concurrent requests (seqpipe.serving.batching): yes, unless SEQPIPE_SERVE_BATCHING=0
    (one request at a time per thread, as MLflow serves any model; for comparing, bench/serve_load.py)."""
    return serving() and os.environ.get("SEQPIPE_SERVE_BATCHING", "1") != "0"


def threads() -> int:
    """The compute threads of one server process's network calls: SEQPIPE_SERVE_THREADS, else 1. The parallelism of a
    server is its workers and its requests: a network call that spreads over every core fights the worker's own
    HTTP work and the other workers for them. On 2 cores, the IMDB classifier, batched with one worker: 1 thread 88
    requests/s at 1 client and 153 at 16; 2 threads 14 and 41 (one run); unbatched with one worker at 16 clients,
    114 against 109 with 2 threads. Raise it for large batches on a machine with cores to spare, and measure
    (bench/serve_load.py)."""
    value = os.environ.get("SEQPIPE_SERVE_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def runtime() -> str:
    """What runs the network of a served classifier, tagger or regressor: "torch", or "onnx" (ONNX Runtime, with
    SEQPIPE_SERVE_RUNTIME=onnx: the network exported when the server loads it and checked against PyTorch)."""
    value = os.environ.get("SEQPIPE_SERVE_RUNTIME", "torch").strip().lower() or "torch"
    if value not in ("torch", "onnx"):
        raise MlflowException(f"SEQPIPE_SERVE_RUNTIME={value!r} is not a runtime: use torch (the default) or onnx")
    return value


def install(limits: dict) -> None:
    """Wrap the scoring server's `invocations` (once per process) with the body limit and the one-line errors."""
    server = sys.modules.get(SERVER)
    original = getattr(server, "invocations", None)
    if original is None or not hasattr(server, "InvocationsResponse"):
        log.warning("seqpipe: this MLflow's scoring server has no `invocations` to guard; error answers are MLflow's")
        return
    if getattr(original, "seqpipe_guard", False):
        return
    server.invocations = guard(original, server.InvocationsResponse, int(limits["max_request_mb"] * 1_000_000))
    if batching():
        widen_request_pool(int(limits["max_concurrent_requests"]))


def widen_request_pool(threads: int) -> None:
    """Run requests in a pool of `threads` threads. MLflow's server hands each request's `predict` to asyncio's
    default pool (cpu count + 4 threads: 6 on 2 cores), so no more than that many requests could wait together for a
    shared batch (seqpipe.serving.batching). uvicorn imports the app, and so loads the model, inside its running
    event loop: that loop's default pool is set here."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not under uvicorn: nothing to widen
        return
    loop.set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="seqpipe-request"))


def guard(invocations: Callable, response: type, max_bytes: int) -> Callable:
    def guarded(data: bytes | str, content_type: str, model: object, input_schema: object) -> object:
        if len(data) > max_bytes:
            body = {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": (
                f"seqpipe: the request is {len(data) / 1e6:.1f} MB; this model takes at most {max_bytes / 1e6:g} MB "
                "per request (serve.max_request_mb): split it into smaller requests")}
            return response(json.dumps(body), 413, "application/json")
        try:
            return invocations(data, content_type, model, input_schema)
        except MlflowException as e:
            raise MlflowException(one_line(e), error_code=ErrorCode.Value(e.error_code)) from None
        except RecursionError:
            raise MlflowException("seqpipe: the request nests too deeply to be read; send a table of rows, each a "
                                  "flat value or a T x F list of lists", error_code=BAD_REQUEST) from None
        except Exception as e:  # the server's own parsing of a request it could not read
            log.exception("seqpipe: a request could not be read")
            raise MlflowException(f"seqpipe: the request could not be read ({type(e).__name__}); send JSON with "
                                  "dataframe_split, dataframe_records, instances or inputs",
                                  error_code=BAD_REQUEST) from None

    guarded.seqpipe_guard = True  # type: ignore[attr-defined]
    return guarded


def one_line(e: MlflowException) -> str:
    """The reason of an error answer: a seqpipe InputError's own message, else MLflow's innermost reason without
    the request it echoes; its first line, cut to MAX_MESSAGE characters."""
    if e.get_http_status_code() >= 500:
        log.error("seqpipe: internal error: %s", e.message)
        return "seqpipe: the model could not answer this request (an internal error, logged by the server)"
    text = getattr(e, "seqpipe_message", None)
    if text is None:  # MLflow's, which may echo the request: "Failed to predict data '<request>'. \nError: ..."
        text = e.message
        if text.startswith("Failed to predict data"):
            text = text.rsplit("\nError: ", 1)[-1]
        if schema := SCHEMA.match(text):  # "Failed to enforce schema of data '<request>' with schema ..."
            text = f"the request does not match this model's input schema {schema[1]}: {schema[2]}"
    line = next((x.strip() for x in text.splitlines() if x.strip()), "the request was refused")
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."

