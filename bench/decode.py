"""Decoding speed of a sequence-to-sequence model, side by side in one run: greedy (the baseline) and beam search at
several widths, batched, on the test inputs of a prepared seq2seq split (or random words when there is none). With a
trained checkpoint it also prints each width's exact match against the references.

    python bench/decode.py [--prepared data/prepared] [--checkpoint models/checkpoints/best.ckpt] [--widths 1 5 10]
                           [--n 2000] [--batch-size 64] [--threads 2] [--json reports/bench_decode.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seqpipe.metrics.text import error_rates
from seqpipe.models.attention import Seq2Seq
from seqpipe.tasks.seq2seq_eval import decode


def inputs(prepared: Path, n: int) -> tuple[list[torch.Tensor], list | None, dict]:
    """The prepared test split's distinct inputs with their references, or random G2P-like words."""
    if (prepared / "meta.json").is_file():
        from seqpipe.data.examples import ExampleDataModule
        from seqpipe.tasks.seq2seq_eval import test_sources

        dm = ExampleDataModule(str(prepared))
        xs, refs = test_sources(dm)
        return xs[:n], refs[:n], dm.meta
    g = torch.Generator().manual_seed(0)
    xs = [torch.randint(4, 33, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g) for _ in range(n)]
    return xs, None, {"inputs": {"kind": "tokens", "vocab_size": 33}, "target": {"tokens": ["x"] * 73}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    xs, refs, meta = inputs(args.prepared, args.n)
    if args.checkpoint:
        from seqpipe.evaluate import load_checkpoint

        net = load_checkpoint(args.checkpoint).net
    else:  # the g2p recipe's network, untrained: speed only
        torch.manual_seed(0)
        net = Seq2Seq(meta["inputs"], len(meta["target"]["tokens"]), "lstm", 64, 256, 1, bidirectional=True)
    rows = []
    for width in args.widths:
        t = time.perf_counter()
        found = decode(net, xs, width, args.max_len, batch_size=args.batch_size)
        seconds = time.perf_counter() - t
        row = {"width": width, "inputs": len(xs), "seconds": round(seconds, 3),
               "inputs_per_sec": round(len(xs) / seconds, 1)}
        if refs is not None and args.checkpoint:
            row["exact_match"] = round(error_rates([h[0].tokens for h in found], refs)["exact_match"], 4)
        rows.append(row)
    base = rows[0]["inputs_per_sec"]
    print(f"{'width':>5} {'inputs/s':>10} {'x greedy':>9} {'exact match':>12}")
    for r in rows:
        print(f"{r['width']:>5} {r['inputs_per_sec']:>10.1f} {r['inputs_per_sec'] / base:>9.2f} "
              f"{r.get('exact_match', float('nan')):>12.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
