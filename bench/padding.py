"""Variable-length batching on a prepared classification split: padding waste and useful tokens/s of one training
step, for naive shuffled batches, length bucketing, and packed sequences, side by side in one run.

    python bench/padding.py [--prepared data/prepared] [--steps 30] [--json reports/bench_padding.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seqpipe.config import compose
from seqpipe.data.batching import BucketBatchSampler, batches_waste, naive_batches, pad_collate
from seqpipe.data.examples import ExampleDataset
from seqpipe.models.nets import SequenceClassifier


def throughput(ds: ExampleDataset, batches: list[list[int]], model_cfg: dict, vocab_size: int, num_classes: int,
               packed: bool, steps: int) -> float:
    """Useful (non-pad) tokens per second of forward + backward + AdamW step."""
    torch.manual_seed(0)
    net = SequenceClassifier(vocab_size, num_classes, **{**model_cfg, "packed": packed})
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    picked = batches[:steps + 3]
    tokens, elapsed = 0, 0.0
    for i, idx in enumerate(picked):
        batch = pad_collate([ds[j] for j in idx])
        t = time.perf_counter()
        logits, _ = net(batch["x"], batch["lengths"])
        loss = F.cross_entropy(logits, batch["y"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:  # warm-up steps are not counted
            elapsed += time.perf_counter() - t
            tokens += int(batch["lengths"].sum())
    return tokens / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--recipe", default="imdb", help="whose model config to use (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cfg = compose([f"recipe={args.recipe}"])
    ds = ExampleDataset(Path(args.prepared) / "train.npz")
    vocab_size = len(json.loads((Path(args.prepared) / "vocab.json").read_text())["tokens"])
    num_classes = len(json.loads((Path(args.prepared) / "meta.json").read_text())["target"]["labels"])
    lengths, bs = ds.lengths.tolist(), cfg.data.batch_size
    naive = naive_batches(len(lengths), bs, seed=0)
    bucket = list(BucketBatchSampler(lengths, bs, seed=0, bucket_factor=cfg.data.bucket_factor))
    # Compare on equal work: the same number of steps drawn from the start of each epoch order.
    model_cfg = {k: v for k, v in cfg.model.items() if k not in ("tie_weights",)}
    rows = [
        ("naive padding", batches_waste(naive, lengths), throughput(ds, naive, model_cfg, vocab_size, num_classes,
                                                                    False, args.steps)),
        ("length bucketing", batches_waste(bucket, lengths), throughput(ds, bucket, model_cfg, vocab_size,
                                                                       num_classes, False, args.steps)),
        ("naive + packed", 0.0, throughput(ds, naive, model_cfg, vocab_size, num_classes, True, args.steps)),
        ("bucketing + packed", 0.0, throughput(ds, bucket, model_cfg, vocab_size, num_classes, True, args.steps)),
    ]
    base = rows[0][2]
    print(f"{len(lengths):,} sequences, batch {bs}, model {cfg.model.cell} x{cfg.model.num_layers} "
          f"bidirectional={cfg.model.bidirectional} hidden {cfg.model.hidden_size}, {args.steps} steps each, "
          f"{torch.get_num_threads()} threads")
    print(f"{'batching':<20} {'padding waste':>14} {'useful tok/s':>13} {'vs naive':>9}")
    for name, waste, tps in rows:
        print(f"{name:<20} {waste:>13.1%} {tps:>13,.0f} {tps / base:>8.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps([{"batching": n, "padding_waste": w, "tokens_per_sec": t}
                                               for n, w, t in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
