"""Serving under load, before and after dynamic batching, in one run: `mlflow models serve` of a registered model on
127.0.0.1, once with SEQPIPE_SERVE_BATCHING=0 and one worker (each request's predict on its own, as MLflow serves any
model: today's server), once batching (seqpipe.serving.batching), and once batching with --workers server
processes (default 2); for the classifier also with SEQPIPE_SERVE_RUNTIME=onnx (its network in ONNX Runtime) on
--workers workers, batching and not; requests/s and p50/p99 latency at 1, 16 and 64 concurrent clients; and
how long a small request takes while six of the largest requests the model's limits allow run.

Run from the repo root after `dvc repro` (a registered language model) and, for the classifier rows, a registered
IMDB classifier (any tracking URI):
    python bench/serve_load.py [--lm models:/seqpipe-shakespeare@champion] [--lm-uri sqlite:///mlflow.db]
                               [--classifier models:/seqpipe-imdb@champion --classifier-uri sqlite:///imdb/mlflow.db]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import report  # bench/common.py

BIN = Path(sys.executable).parent
REVIEW = ("I went in expecting very little from this film and came out moved. The cast is superb, the writing sharp "
          "and the story never drags, although the second half loses some of its nerve. ") * 6  # ~230 words


def post(url: str, body: dict, timeout: float = 120) -> tuple[int, float]:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return status, time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


class Server:
    """`mlflow models serve` of `model` on a free port (`workers` processes), batching or not; stopped with its
    process group."""

    def __init__(self, model: str, uri: str, batching: bool, workers: int = 1, runtime: str = "torch"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
               "SEQPIPE_SERVE_BATCHING": "1" if batching else "0", "SEQPIPE_SERVE_RUNTIME": runtime}
        argv = [str(BIN / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local", "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(workers)]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{self.url}/ping", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mlflow models serve -m {model} exited") from None
                time.sleep(0.5)
        raise RuntimeError(f"mlflow models serve -m {model} did not answer in 120 s")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def load(url: str, body: dict, clients: int, requests: int) -> dict:
    with ThreadPoolExecutor(clients) as pool:
        t = time.perf_counter()
        results = list(pool.map(lambda _: post(url, body), range(requests)))
        wall = time.perf_counter() - t
    lat = [r[1] for r in results]
    return {"rps": requests / wall, "p50": pct(lat, 0.5) * 1000, "p99": pct(lat, 0.99) * 1000,
            "failed": sum(r[0] != 200 for r in results)}


def small_while_largest(url: str, small: dict, largest: dict) -> tuple[float, float, list[int]]:
    """(seconds for the small request, seconds for the slowest of six largest, their statuses)."""
    with ThreadPoolExecutor(7) as pool:
        big = [pool.submit(post, url, largest) for _ in range(6)]
        time.sleep(1.0)
        status, took = pool.submit(post, url, small).result()
        ends = [f.result() for f in big]
    assert status == 200, status
    return took, max(e[1] for e in ends), [e[0] for e in ends]


def bench(name: str, model: str, uri: str, small: dict, largest: dict, clients: list[int], per_client: int,
          workers: int = 1, onnx: bool = False) -> dict:
    """Today's server (one worker, each request on its own) against batching with one worker and, with `workers` >
    1, with that many workers; with `onnx`, ONNX Runtime on `workers` workers, batching and not; the ratios are
    against today's server."""
    rows: dict[str, object] = {}
    figures: dict[tuple[bool, int, str, int], dict] = {}
    setups = [(False, 1, "torch"), (True, 1, "torch")] + ([(True, workers, "torch")] if workers > 1 else []) + \
        ([(True, workers, "onnx"), (False, workers, "onnx")] if onnx else [])
    for batching, n_workers, runtime in setups:
        server = Server(model, uri, batching, n_workers, runtime)
        mode = ("batched" if batching else "one at a time") + f", {n_workers} worker{'s' if n_workers > 1 else ''}" \
            + (", ONNX Runtime" if runtime == "onnx" else "")
        try:
            load(server.url, small, 4, 20)  # warm up
            for n in clients:
                got = figures[batching, n_workers, runtime, n] = load(server.url, small, n, max(40, n * per_client))
                rows[f"{name}, {mode}, {n} clients: requests/s, p50 / p99 ms (failed)"] = \
                    f"{got['rps']:.1f}, {got['p50']:.0f} / {got['p99']:.0f} ({got['failed']})"
            took, slowest, statuses = small_while_largest(server.url, small, largest)
            rows[f"{name}, {mode}: a small request while 6 largest run (s); slowest largest (s)"] = \
                f"{took:.2f}; {slowest:.1f} ({', '.join(map(str, statuses))})"
        finally:
            server.stop()
    for batching, n_workers, runtime in setups[1:]:
        how = f"{'batched' if batching else 'one at a time'} with {n_workers} worker(s)" + \
            (" in ONNX Runtime" if runtime == "onnx" else "")
        for n in clients:
            before, after = figures[False, 1, "torch", n], figures[batching, n_workers, runtime, n]
            rows[f"{name}, {n} clients, {how} / today's server (x): requests/s; p99"] = \
                f"{after['rps'] / before['rps']:.2f}; {after['p99'] / before['p99']:.2f}"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", default="models:/seqpipe-shakespeare@champion")
    ap.add_argument("--lm-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    ap.add_argument("--classifier", default=None, help="e.g. models:/seqpipe-imdb@champion")
    ap.add_argument("--classifier-uri", default=None)
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--per-client", type=int, default=8, help="requests per client at each concurrency (min. 40)")
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2,
                    help="also measure batching with this many server workers (mlflow models serve --workers)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the classifier's ONNX Runtime setups")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    rows: dict[str, object] = {}
    if args.lm:
        small = {"dataframe_records": [{"prompt": "ROMEO:"}],
                 "params": {"max_new_tokens": args.new_tokens, "temperature": 0.8, "top_k": 40}}
        largest = {"dataframe_records": [{"prompt": "ROMEO:"}] * 4,  # the default limits: 4 rows x 1,000 tokens
                   "params": {"max_new_tokens": 1000, "temperature": 0.8}}
        rows |= bench("lm", args.lm, args.lm_uri, small, largest, clients, args.per_client, args.workers)
    if args.classifier:
        small = {"dataframe_records": [{"text": REVIEW}]}
        words = REVIEW.split()
        long_review = " ".join((words * 4)[:680])  # 256 rows x 760 tokens: within the default max_total_tokens (200k)
        largest = {"dataframe_records": [{"text": long_review}] * 256}
        rows |= bench("imdb", args.classifier, args.classifier_uri or args.lm_uri, small, largest, clients,
                      args.per_client, args.workers, onnx=not args.no_onnx)
    report(rows, args.json, "")


if __name__ == "__main__":
    main()
