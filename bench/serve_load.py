"""Serving under load: `mlflow models serve` on 127.0.0.1 against the model's own compute for the same request
in-process (the baseline, measured in the same run); the time to refuse a request over the model's limits; the
largest request the limits allow; whether small requests are still answered while the largest ones run.

Run from the repo root after `dvc repro` (needs a registered language model):
    python bench/serve_load.py [--model models:/seqpipe-shakespeare@champion] [--requests 1000] [--concurrency 16]
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


def post(url: str, body: dict, timeout: float = 120) -> tuple[int, float, dict]:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, answer = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:  # a 4xx from the model is JSON; a 504 from the server's timeout is not
        body = e.read()
        status, answer = e.code, json.loads(body) if body.startswith(b"{") else {"message": body.decode()[:200]}
    return status, time.perf_counter() - t, answer


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models:/seqpipe-shakespeare@champion")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")

    import mlflow
    import pandas as pd

    from seqpipe.tracking.store import use_tracking_uri

    use_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(args.model)
    limits = model.unwrap_python_model().limits
    params = {"max_new_tokens": args.new_tokens, "temperature": 0.8, "top_k": 40}
    frame = pd.DataFrame({"prompt": ["ROMEO:"]})
    for _ in range(5):
        model.predict(frame, params=params)
    t = time.perf_counter()
    for _ in range(50):
        model.predict(frame, params=params)
    in_process = (time.perf_counter() - t) / 50

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", args.model, "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    rows: dict[str, object] = {}
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        body = {"dataframe_records": [{"prompt": "ROMEO:"}], "params": params}
        for _ in range(10):
            post(url, body)
        t = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda _: post(url, body), range(args.requests)))
        wall = time.perf_counter() - t
        lat = [r[1] for r in results]
        versions = {r[2]["predictions"][0]["model"] for r in results if r[0] == 200}
        rows |= {
            f"in-process predict, 1 row x {args.new_tokens} tokens (ms)": round(in_process * 1000, 1),
            f"served, {args.requests} requests at concurrency {args.concurrency}: failures": sum(r[0] != 200
                                                                                              for r in results),
            "served: requests/s": round(args.requests / wall, 1),
            "served: latency p50 / p99 (ms)": f"{pct(lat, 0.5) * 1000:.0f} / {pct(lat, 0.99) * 1000:.0f}",
            "served: wall time per request (ms) / in-process (x)":
                f"{wall / args.requests * 1000:.1f} / {wall / args.requests / in_process:.2f}",
            "version named in the answers": ", ".join(sorted(versions)),
        }
        status, took, answer = post(url, {"dataframe_records": [{"prompt": "ROMEO:"}],
                                          "params": {"max_new_tokens": 10_000_000, "temperature": 0}})
        rows["10,000,000 greedy tokens: answer, time (ms)"] = f"HTTP {status}, {took * 1000:.0f}"
        n = limits["max_total_new_tokens"] // limits["max_new_tokens"]
        biggest = {"dataframe_records": [{"prompt": "ROMEO:"}] * n,
                   "params": {"max_new_tokens": limits["max_new_tokens"], "temperature": 0.8}}
        status, took, _ = post(url, biggest)
        rows[f"largest allowed request, {n} rows x {limits['max_new_tokens']} tokens: answer, time (s)"] = \
            f"HTTP {status}, {took:.1f}"
        with ThreadPoolExecutor(7) as pool:
            big = [pool.submit(post, url, biggest) for _ in range(6)]
            time.sleep(1.0)
            small = pool.submit(post, url, body).result()
            ends = [f.result() for f in big]
        rows["6 largest at once: answers; a small request meanwhile"] = \
            f"{', '.join(str(e[0]) for e in ends)}; HTTP {small[0]} in {small[1]:.1f} s"
        rows["6 largest at once: slowest (s)"] = round(max(e[1] for e in ends), 1)
        t = time.perf_counter()
        status = post(url, body)[0]
        rows["a small request after them (ms)"] = f"HTTP {status}, {(time.perf_counter() - t) * 1000:.0f}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    report(rows, args.json, "")


if __name__ == "__main__":
    main()
