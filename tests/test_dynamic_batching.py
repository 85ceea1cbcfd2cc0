"""Dynamic batching of a served model (seqpipe.serving.batching): concurrent requests share the network's calls and
each gets what it would have got alone; a bad request's error stays its own; a small request is answered between
the parts of a large one, and while long generations run."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import clone, working_dir

from seqpipe.data.requests import InputError
from seqpipe.serving import local
from seqpipe.serving.batching import RowBatcher

OLD = Path(__file__).parent / "data"


def hold_first_call(batcher: RowBatcher, queued: int, calls: list) -> tuple[Callable, threading.Event]:
    """A row function (rows -> 10 x each row; a negative row fails) whose first call waits until `queued` more jobs
    are queued behind it, so that what the worker takes next is known; and the event set when that call starts."""
    started = threading.Event()

    def fn(rows: list) -> list:
        if not started.is_set():
            started.set()
            deadline = time.monotonic() + 10
            while len(batcher._queue) < queued and time.monotonic() < deadline:
                time.sleep(0.005)
        calls.append(list(rows))
        if any(r < 0 for r in rows):
            raise ValueError(f"row {min(rows)} is negative")
        return [r * 10 for r in rows]
    return fn, started


def start_held(batcher: RowBatcher, queued: int, calls: list, key: str = "k") -> tuple[Callable, threading.Thread]:
    """`hold_first_call`'s function, and a thread whose call of it (row 0, under `key`) is running and held."""
    fn, started = hold_first_call(batcher, queued, calls)
    first = threading.Thread(target=batcher.run, args=(key, fn, [0]))
    first.start()
    started.wait()
    return fn, first


def timed(batcher: RowBatcher, fn: Callable, ends: dict) -> Callable:
    """A caller of `batcher.run("k", fn, rows)` that records in `ends[name]` when its answer came."""
    def call(name: str, rows: list) -> None:
        batcher.run("k", fn, rows)
        ends[name] = time.monotonic()
    return call


def test_concurrent_callers_share_one_call_and_each_gets_its_own_rows():
    batcher, calls = RowBatcher(batch_rows=64, batch_wait_ms=1), []
    fn, first = start_held(batcher, 7, calls)
    with ThreadPoolExecutor(7) as pool:
        outs = list(pool.map(lambda k: batcher.run("k", fn, [k, k + 100]), range(1, 8)))
    first.join()
    assert outs == [[k * 10, (k + 100) * 10] for k in range(1, 8)]
    assert len(calls) == 2 and sorted(calls[1]) == sorted(r for k in range(1, 8) for r in (k, k + 100))


def test_a_bad_request_in_a_shared_batch_gets_its_error_and_the_others_their_answers():
    batcher, calls = RowBatcher(batch_rows=64, batch_wait_ms=1), []
    fn, first = start_held(batcher, 4, calls)

    def call(rows: list) -> list | str:
        try:
            return batcher.run("k", fn, rows)
        except ValueError as e:
            return str(e)

    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(call, [[1], [2, 3], [-5], [4]]))
    first.join()
    assert outs == [[10], [20, 30], "row -5 is negative", [40]]


def test_a_small_request_is_answered_between_the_parts_of_a_large_one():
    batcher, calls = RowBatcher(batch_rows=4, batch_wait_ms=1), []
    fn, started = hold_first_call(batcher, 1, calls)
    ends: dict = {}
    call = timed(batcher, fn, ends)
    large = threading.Thread(target=call, args=("large", list(range(10))))
    large.start()
    started.wait()
    call("small", [99])
    large.join()
    assert calls[:2] == [[0, 1, 2, 3], [99]] and calls[2:] == [[4, 5, 6, 7], [8, 9]]
    assert ends["small"] < ends["large"]


def test_a_small_request_goes_ahead_of_the_waiting_parts_of_large_ones_and_large_ones_take_turns():
    """Fair queuing: two large requests (three parts each) are queued, then a 1-row request; the worker takes the
    small one next, then the large ones part by part in turn (first come, first served would make it wait for both
    large requests' first parts, and the second large request for the whole first one)."""
    batcher, calls = RowBatcher(batch_rows=4, batch_wait_ms=1), []
    fn, first = start_held(batcher, 3, calls)

    def slow(rows: list) -> list:  # as a network takes a while: each caller has queued its next part by the end
        time.sleep(0.02)
        return fn(rows)

    ends: dict = {}
    call = timed(batcher, slow, ends)
    large = [threading.Thread(target=call, args=(f"large{i}", list(range(10 * i, 10 * i + 10)))) for i in (1, 2)]
    for i, thread in enumerate(large):
        thread.start()
        while len(batcher._queue) < i + 1:  # queued in this order
            time.sleep(0.001)
    call("small", [99])
    for thread in large:
        thread.join()
    first.join()
    assert calls[1] == [99]
    assert calls[2:6] == [[10, 11, 12, 13], [20, 21, 22, 23], [14, 15, 16, 17], [24, 25, 26, 27]]
    assert [row for c in calls[6:] for row in c] == [18, 19, 28, 29]  # the two last parts: together or in turn
    assert ends["small"] < min(ends["large1"], ends["large2"])


def test_different_keys_never_share_a_call():
    batcher, calls = RowBatcher(batch_rows=64, batch_wait_ms=1), []
    fn, first = start_held(batcher, 2, calls, "a")
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda kv: batcher.run(kv[0], fn, kv[1]), [("a", [1]), ("b", [2])]))
    first.join()
    assert outs == [[10], [20]] and sorted(map(tuple, calls[1:])) == [(1,), (2,)]


@pytest.mark.parametrize("path,column,texts", [
    ("models-0.1/classifier", "text", ["a good film", "an awful film", "good", "film film awful boring"]),
    ("models-before-tasks/tagger", "text", ["ACGTACGTTT", "GGC", "A", "ACGTTGCAACGTAGGATTAC"]),
])
def test_served_rows_answer_as_they_do_alone(path, column, texts):
    """A classifier and a tagger: sixteen concurrent requests of mixed lengths, batched, answer exactly as each
    does alone; a request with a bad row is refused with its own row number."""
    model = mlflow.pyfunc.load_model(str(OLD / path))
    served = model.unwrap_python_model()
    requests = [pd.DataFrame({column: [texts[i % 4], texts[(i + 1) % 4]][: 1 + i % 2]}) for i in range(16)]
    alone = [served.predict(None, r) for r in requests]
    served.start_batching()
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda r: served.predict(None, r), requests))
    for a, b in zip(alone, together):
        pd.testing.assert_frame_equal(a, b, atol=1e-5, check_exact=False)
    if "tagger" in path:
        with pytest.raises(InputError, match="row 1: .*'Z'"):
            served.predict(None, pd.DataFrame({"text": ["ACGT", "ACZ"]}))


@pytest.mark.parametrize("path,texts", [
    ("models-0.1/classifier", ["a good film", "an awful film", "good", "film film awful boring"]),
    ("models-before-tasks/tagger", ["ACGTACGTTT", "GGC", "A", "ACGTTGCAACGTAGGATTAC"]),
])
def test_rows_run_in_onnx_runtime_answer_as_in_pytorch(path, texts):
    """SEQPIPE_SERVE_RUNTIME=onnx: the network a server's forward_rows runs, exported and checked when it loads,
    gives PyTorch's answers (labels and tags the same, probabilities within 1e-4), alone and batched."""
    from seqpipe.serving.onnx_export import OnnxNet, runtime_net

    served = mlflow.pyfunc.load_model(str(OLD / path)).unwrap_python_model()
    request = pd.DataFrame({"text": texts})
    want = served.predict(None, request)
    served.rows_net = runtime_net(served, threads=1)
    assert isinstance(served.rows_net, OnnxNet)
    pd.testing.assert_frame_equal(served.predict(None, request), want, atol=1e-4, check_exact=False)
    served.start_batching()
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda t: served.predict(None, pd.DataFrame({"text": [t]})), texts))
    pd.testing.assert_frame_equal(pd.concat(together, ignore_index=True), want, atol=1e-4, check_exact=False)


def test_a_server_worker_runs_its_network_on_one_thread_unless_told(monkeypatch):
    """A network call that spreads over every core fights the server's HTTP work and other workers: one thread a
    call unless SEQPIPE_SERVE_THREADS says otherwise (a value that is not a positive integer is ignored); the runtime
    is torch or onnx."""
    from seqpipe.serving import guard

    monkeypatch.setitem(sys.modules, f"{guard.SERVER}.app", sys)  # as inside `mlflow models serve`
    for threads in ("", "0", "many"):
        monkeypatch.setenv("SEQPIPE_SERVE_THREADS", threads)
        assert guard.threads() == 1
    monkeypatch.setenv("SEQPIPE_SERVE_THREADS", "3")
    assert guard.threads() == 3
    monkeypatch.setenv("SEQPIPE_SERVE_RUNTIME", "tensorrt")
    with pytest.raises(Exception, match="SEQPIPE_SERVE_RUNTIME='tensorrt' is not a runtime: use torch"):
        guard.runtime()
    monkeypatch.setenv("SEQPIPE_SERVE_RUNTIME", "ONNX")
    assert guard.runtime() == "onnx"


@pytest.fixture(scope="module")
def lm(tiny_lm, tmp_path_factory):
    root = clone(tiny_lm["root"], tmp_path_factory.mktemp("batching") / "project")
    with working_dir(root):
        served, _ = local.load("models:/seqpipe-text_file@champion", f"sqlite:///{root / 'mlflow.db'}", "generate")
        yield served


def continuations(served: object, prompts: list[str], params: dict) -> list[tuple[str, list]]:
    from seqpipe.data.request_checks import generation_params

    return served.continuations(prompts, generation_params(params, served.limits))


def test_generation_in_a_shared_batch_equals_generation_alone(lm):
    """Greedy and seeded sampling, with and without top-k, and log-probabilities: the same text from rows that
    run in one batch with other requests' rows as from each row alone."""
    requests = [(["KING:", ""], {"max_new_tokens": 30, "temperature": 0.0}),
                (["ROMEO: O", "First"], {"max_new_tokens": 25, "temperature": 0.8, "seed": 3}),
                (["The"], {"max_new_tokens": 40, "temperature": 1.0, "top_k": 5, "seed": 11}),
                (["KING:"], {"max_new_tokens": 1, "temperature": 0.5, "seed": 2}),
                (["K"], {"max_new_tokens": 0})]
    lm.stop_batching()
    alone = [continuations(lm, prompts, params) for prompts, params in requests]
    lm.start_batching()
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: continuations(lm, *r), requests))
    assert [[text for text, _ in rows] for rows in together] == [[text for text, _ in rows] for rows in alone]
    for rows_a, rows_b in zip(alone, together):
        for (_, lp_a), (_, lp_b) in zip(rows_a, rows_b):
            assert [p for p, _ in lp_a] == [p for p, _ in lp_b]
            assert np.allclose([v for _, v in lp_a], [v for _, v in lp_b], atol=1e-4)
    assert together[3][0][0] and len(together[3][0][1]) == 1 and together[4] == [("", [])]


def test_a_short_generation_ends_while_a_long_one_runs(lm):
    """Continuous batching: four rows of 1,000 tokens run; a 5-token request sent after them joins the running batch
    and is answered long before they end."""
    lm.start_batching()
    ends = {}

    def run(name: str, prompts: list[str], new: int) -> None:
        continuations(lm, prompts, {"max_new_tokens": new, "temperature": 1.0, "seed": 1})
        ends[name] = time.monotonic()

    long = threading.Thread(target=run, args=("long", ["KING:"] * 4, 1000))
    start = time.monotonic()
    long.start()
    time.sleep(0.05)
    run("short", ["ROMEO:"], 5)
    long.join()
    assert ends["short"] - start < (ends["long"] - start) / 4, ends
