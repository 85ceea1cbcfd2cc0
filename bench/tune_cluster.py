"""What a second Ray node buys a sweep: the same 8-trial sweep on a cluster of one node and on a cluster of two,
each node limited to one CPU (so the ratio shows the scaling, not this machine's two cores).

The grid (depth x hidden size, ASHA off so that every trial does the same work) runs as 1-CPU trials on
  1 node    `ray start --head --num-cpus 1`: one trial at a time
  2 nodes   the same head plus `ray start --address HEAD --num-cpus 1`: one trial on each node at a time
Both nodes are `ray start` processes on 127.0.0.1 started (and killed) by this script, never `ray stop`, which would
end every Ray on the machine. The sweep's wall time leaves out connecting to the cluster, shown on its own.

    python bench/tune_cluster.py [--prepared data/prepared] [--batches 10] [--epochs 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
DEPTHS, HIDDEN = (1, 2), (32, 64, 128, 256)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(temp: Path, env: dict, name: str, role: list[str]) -> subprocess.Popen:
    """One node (`ray start --block`, its own process group), one CPU, its own agent ports; back once it runs."""
    ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
    log = temp / f"{name}.log"
    proc = subprocess.Popen([RAY, "start", "--block", *role, "--num-cpus=1", f"--node-name={name}",
                             "--object-store-memory=100000000", "--disable-usage-stats", f"--temp-dir={temp}", *ports],
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"ray start {name} failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def sweep(args: argparse.Namespace, root: Path, nodes: int) -> dict:
    temp = Path(tempfile.mkdtemp(prefix="seqpipe-ray-"))
    env = {**os.environ, "HOME": str(root), "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    procs = [start_node(temp, env, "head", ["--head", f"--port={port}", "--include-dashboard=false"])]
    try:
        if nodes == 2:
            procs.append(start_node(temp, env, "worker", [f"--address=127.0.0.1:{port}"]))
        name = f"bench-{nodes}-node"
        overrides = [
            f"paths.prepared={Path(args.prepared).resolve()}", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"trainer.max_epochs={args.epochs}", f"trainer.limit_train_batches={args.batches}",
            f"trainer.limit_val_batches={args.val_batches}", "~tune.space",
            f"+tune.space.model.num_layers.grid=[{','.join(map(str, DEPTHS))}]",
            f"+tune.space.model.hidden_size.grid=[{','.join(map(str, HIDDEN))}]", "tune.num_samples=1",
            f"tune.scheduler.grace_period={args.epochs}", "tune.cpus_per_trial=1", f"tune.address=127.0.0.1:{port}",
            f"tune.storage={root / 'sweeps'}", f"tune.name={name}"]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "seqpipe", "tune", *overrides], cwd=ROOT, check=True, text=True,
                       capture_output=True, env={**env, "SEQPIPE_CONF_DIR": str(root / "conf")})
        total = time.perf_counter() - start
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
    s = json.loads((root / "sweeps" / name / "summary.json").read_text())
    rows = list(csv.DictReader(open(root / "sweeps" / name / "results.csv")))
    if s["failed"]:
        errors = {r["error"] for r in rows if r["error"]}
        raise SystemExit(f"{s['failed']} of the {nodes}-node sweep's trials failed: {'; '.join(errors)}")
    per_node = "+".join(str(n) for n in sorted(Counter(r["node"] for r in rows).values(), reverse=True))
    return {"nodes": nodes, "trials": s["trials"], "per node": per_node, "connect s": s["ray_start_seconds"],
            "wall s": s["wall_seconds"], "fit s": s["fit_seconds_total"], "command s": round(total, 1),
            "best": s.get("best", {}).get("val/loss")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", default=str(ROOT / "data" / "prepared"))
    p.add_argument("--batches", type=int, default=10, help="training batches per epoch (trainer.limit_train_batches)")
    p.add_argument("--val-batches", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="seqpipe-bench-cluster-") as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
        rows = [sweep(args, root, nodes=1), sweep(args, root, nodes=2)]
    print(f"{len(DEPTHS) * len(HIDDEN)} trials of 1 CPU (depth {DEPTHS} x hidden {HIDDEN}), {args.epochs} epochs of "
          f"{args.batches} batches each, nodes of 1 CPU")
    print(f"{'nodes':>5}{'trials':>8}{'per node':>10}{'connect s':>11}{'wall s':>9}{'fit s':>9}{'command s':>11}"
          f"{'speed-up':>10}")
    for r in rows:
        r["speed-up"] = rows[0]["wall s"] / r["wall s"]
        print(f"{r['nodes']:>5}{r['trials']:>8}{r['per node']:>10}{r['connect s']:>11.1f}{r['wall s']:>9.1f}"
              f"{r['fit s']:>9.1f}{r['command s']:>11.1f}{r['speed-up']:>9.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
