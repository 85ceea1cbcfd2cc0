"""The cost of the reference cells (model.cell=lstm_ref / gru_ref, written out gate by gate) against torch's fused
nn.LSTM / nn.GRU with the same weights: forward + backward of one batch, side by side in one run.

    python bench/cells.py [--batch 64] [--length 128] [--input 64] [--hidden 256] [--layers 1] [--rounds 10]
                          [--threads 2] [--device cpu] [--json reports/bench_cells.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from seqpipe.models.nets import CELLS

PAIRS = (("lstm", "lstm_ref"), ("gru", "gru_ref"))


def step_seconds(rnn: torch.nn.Module, x: torch.Tensor) -> float:
    """One forward + backward (gradients of every parameter and of the input), timed."""
    t = time.perf_counter()
    out, _ = rnn(x)
    out.sum().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64, help="as data.batch_size (default: %(default)s)")
    ap.add_argument("--length", type=int, default=128, help="steps, as data.bptt (default: %(default)s)")
    ap.add_argument("--input", type=int, default=64, help="as model.embedding_dim (default: %(default)s)")
    ap.add_argument("--hidden", type=int, default=256, help="as model.hidden_size (default: %(default)s)")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10, help="timed steps per cell, after 2 warm-up steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, args.length, args.input, device=args.device, requires_grad=True)
    nets = {}
    for fused, ref in PAIRS:
        torch.manual_seed(0)
        nets[fused] = CELLS[fused](args.input, args.hidden, args.layers, batch_first=True).to(args.device)
        nets[ref] = CELLS[ref](args.input, args.hidden, args.layers, batch_first=True).to(args.device)
        nets[ref].load_state_dict(nets[fused].state_dict())
    times: dict[str, list[float]] = {name: [] for name in nets}
    for r in range(args.rounds + 2):  # interleaved, so a slow spell of the machine hits every cell alike
        for name, rnn in nets.items():
            seconds = step_seconds(rnn, x)
            if r >= 2:
                times[name].append(seconds)
    print(f"forward + backward, batch {args.batch} x {args.length} steps, input {args.input}, hidden {args.hidden}, "
          f"{args.layers} layer(s), {args.device}, {torch.get_num_threads()} threads, median of {args.rounds}")
    print(f"{'cell':<10} {'ms/step':>9} {'tokens/s':>10} {'vs fused':>9}")
    rows = []
    for fused, ref in PAIRS:
        base = statistics.median(times[fused])
        for name in (fused, ref):
            ms = statistics.median(times[name])
            rows.append({"cell": name, "ms": round(ms * 1e3, 2), "tokens_per_sec": round(args.batch * args.length / ms),
                         "slowdown": round(ms / base, 2)})
            print(f"{name:<10} {ms * 1e3:>9.1f} {args.batch * args.length / ms:>10,.0f} {ms / base:>8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
