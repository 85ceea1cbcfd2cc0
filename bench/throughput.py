"""Training throughput: seqpipe's training step as configured by default (Lightning, MLflow logging, progress bar)
against a plain PyTorch loop on the same network, data, batch and optimizer, in the same process; plus hardware
efficiency of the LSTM step against torch.mm on this machine, for several layer sizes (the default first).

    python bench/throughput.py [--steps 60] [--cells lstm,gru,rnn] [--sizes 256,512,1024] [--device cuda]
                               [--json reports/bench_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import MLFlowLogger

from seqpipe.config import compose
from seqpipe.data.streams import ChunkDataset, StreamDataModule, batchify
from seqpipe.data.vocab import SPECIALS, Vocab
from seqpipe.models.nets import RecurrentLM, detach_state
from seqpipe.tasks.lightning import SeqModule

WARMUP = 5


class StepTimer(Callback):
    """Wall time of the training steps after the warm-up, tokens included."""

    def __init__(self) -> None:
        self.t0, self.tokens, self.elapsed = 0.0, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ANN001
        if batch_idx == WARMUP:
            self.t0 = now(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
        if batch_idx >= WARMUP:
            self.tokens += batch["x"].numel()
            self.elapsed = now(pl_module.device) - self.t0


def now(device: torch.device | str) -> float:
    """perf_counter after the device has finished its queued work (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def fake_prepared(root: Path, n_tokens: int, vocab_size: int = 88) -> Path:
    """A prepared directory with a random token stream (throughput does not depend on the text)."""
    rng = np.random.default_rng(0)
    tokens = [*SPECIALS, *[chr(0x100 + i) for i in range(vocab_size - len(SPECIALS))]]
    Vocab(tokens).save(root / "vocab.json")
    for split, n in (("train", n_tokens), ("val", 20_000), ("test", 20_000)):
        np.save(root / f"{split}.npy", rng.integers(4, vocab_size, n, dtype=np.uint8))
    return root


def seqpipe_step(cfg, prepared: Path, steps: int, tmp: Path) -> float:  # noqa: ANN001
    """tokens/s of the default Lightning fit: MLflow logger (SQLite), progress bar, clipping, carried state."""
    L.seed_everything(0, verbose=False)
    dm = StreamDataModule(str(prepared), cfg.data.batch_size, cfg.data.bptt, cfg.data.eval_batch_size)
    meta = {"task": "lm", "inputs": {"kind": "tokens", "vocab_size": len(dm.vocab)}, "target": {}}
    module = SeqModule("lm", meta, dict(cfg.model), dict(cfg.optim), True)
    timer = StepTimer()
    logger = MLFlowLogger(experiment_name="bench", tracking_uri=f"sqlite:///{tmp / 'bench.db'}")
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                        max_steps=WARMUP + steps, limit_val_batches=0, logger=logger,
                        gradient_clip_val=cfg.trainer.gradient_clip_val,
                        log_every_n_steps=cfg.train.log_every_n_steps, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[timer, TQDMProgressBar(refresh_rate=50)])
    trainer.fit(module, datamodule=dm)
    return timer.tokens / timer.elapsed


def plain_loop(cfg, prepared: Path, steps: int, device: str) -> float:  # noqa: ANN001
    """tokens/s of a hand-written loop: same network, AdamW, clipping, carried hidden state and precision."""
    torch.manual_seed(0)
    vocab = Vocab.load(prepared / "vocab.json")
    net = RecurrentLM(len(vocab), **{k: v for k, v in cfg.model.items() if k != "pooling"}).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr)
    chunks = ChunkDataset(batchify(np.load(prepared / "train.npy"), cfg.data.batch_size), cfg.data.bptt)
    state, tokens, t0 = None, 0, 0.0
    for i in range(WARMUP + steps):
        if i == WARMUP:
            t0 = now(device)
        batch = {k: v.to(device) for k, v in chunks[i].items()}
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=bf16(cfg)):
            logits, state = net(batch["x"], state=state)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["y"].reshape(-1))
        state = detach_state(state)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.trainer.gradient_clip_val)
        opt.step()
        if i >= WARMUP:
            tokens += batch["x"].numel()
    return tokens / (now(device) - t0)


def bf16(cfg) -> bool:  # noqa: ANN001
    return str(cfg.trainer.precision).startswith("bf16")


def mm_gflops(device: str, dtype: torch.dtype, n: int = 2048, reps: int = 20) -> float:
    """GFLOP/s of an n x n matmul on `device` in `dtype` (the training step's precision)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    t = now(device)
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (now(device) - t) / 1e9


def lstm_train_flops_per_token(cfg, vocab_size: int) -> float:  # noqa: ANN001
    """3x the forward matmul FLOPs per token: LSTM gates 2*4H(E+H) per layer, output layer 2*H*V."""
    m = cfg.model
    fwd, inp = 0, m.embedding_dim
    for _ in range(m.num_layers):
        fwd += 2 * 4 * m.hidden_size * (inp + m.hidden_size)
        inp = m.hidden_size
    fwd += 2 * m.hidden_size * vocab_size
    return 3 * fwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5,
                    help="alternating runs of each; the median of the paired ratios is reported")
    ap.add_argument("--cells", default="lstm,gru,rnn")
    ap.add_argument("--sizes", default="256,512,1024", help="LSTM hidden sizes for the efficiency table")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: seqpipe runs trainer=gpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device, rows, eff = args.device, [], []
    base = ["trainer=gpu"] if device == "cuda" else []  # trainer=gpu: bf16 mixed precision
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for cell in args.cells.split(","):
            cfg = compose([*base, f"model.cell={cell}"])
            prepared = fake_prepared(Path(tempfile.mkdtemp(dir=tmp)), cfg.data.batch_size * cfg.data.bptt * 200)
            ours, plain = [], []
            for _ in range(args.rounds):  # alternate, so drift of the machine's speed hits both alike
                ours.append(seqpipe_step(cfg, prepared, args.steps, tmp))
                plain.append(plain_loop(cfg, prepared, args.steps, device))
            ratios = [a / b for a, b in zip(ours, plain)]
            rows.append({"cell": cell, "seqpipe_tok_s": statistics.median(ours),
                         "plain_tok_s": statistics.median(plain), "ratio": statistics.median(ratios),
                         "ratio_min": min(ratios), "ratio_max": max(ratios)})
        # The machine's speed drifts by several % between runs; seqpipe's own cost per step is measured where it
        # dominates (a tiny RNN, a ~1 ms step) and set against each cell's plain step time.
        tiny = compose([*base, "model.cell=rnn", "model.hidden_size=8", "model.embedding_dim=8", "data.bptt=8"])
        tokens = tiny.data.batch_size * tiny.data.bptt
        per_step = [1e3 * tokens * (1 / seqpipe_step(tiny, prepared, 300, tmp)
                                    - 1 / plain_loop(tiny, prepared, 300, device)) for _ in range(args.rounds)]
        overhead_ms = statistics.median(per_step)
        for r in rows:
            plain_ms = 1e3 * cfg.data.batch_size * cfg.data.bptt / r["plain_tok_s"]
            r["implied_ratio"] = plain_ms / (plain_ms + overhead_ms)
        mm = mm_gflops(device, torch.bfloat16 if bf16(cfg) else torch.float32)
        for hidden in map(int, args.sizes.split(",")):
            cfg = compose([*base, "model.cell=lstm", f"model.hidden_size={hidden}"])
            default = hidden == compose([]).model.hidden_size and any(r["cell"] == "lstm" for r in rows)
            steps = args.steps if default else max(10, args.steps * 256 // hidden)
            ours = next(r["seqpipe_tok_s"] for r in rows if r["cell"] == "lstm") if default else seqpipe_step(
                cfg, prepared, steps, tmp)
            eff.append({"hidden": hidden, "lstm_gflops": lstm_train_flops_per_token(cfg, 88) * ours / 1e9,
                        "mm_gflops": mm})
    cfg = compose(base)
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{where}; batch {cfg.data.batch_size} x bptt {cfg.data.bptt}, hidden {cfg.model.hidden_size}, "
          f"{args.steps} timed steps after {WARMUP} warm-up steps;\n{args.rounds} alternating runs of each, "
          "ratio: median (range) of the pairs")
    print(f"{'cell':<6} {'seqpipe tok/s':>14} {'plain loop tok/s':>17} {'ratio':>7} {'(range)':>13} "
          f"{'from overhead':>14}")
    for r in rows:
        print(f"{r['cell']:<6} {r['seqpipe_tok_s']:>14,.0f} {r['plain_tok_s']:>17,.0f} {r['ratio']:>7.3f} "
              f"({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) {r['implied_ratio']:>14.3f}")
    print(f"seqpipe's cost per training step over the plain loop: {overhead_ms:.2f} ms (median of "
          f"{args.rounds}, tiny RNN); 'from overhead' = plain step time / (plain step time + that cost)")
    print(f"\nLSTM training step (seqpipe), GFLOP/s counted as 3x the forward matmul FLOPs; torch.mm 2048x2048 "
          f"({cfg.trainer.precision}): {mm:.1f} GFLOP/s")
    print(f"{'hidden':>6} {'LSTM GFLOP/s':>13} {'/ torch.mm 2048':>16}")
    for e in eff:
        print(f"{e['hidden']:>6} {e['lstm_gflops']:>13.1f} {e['lstm_gflops'] / mm:>16.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": where, "throughput": rows, "overhead_ms": overhead_ms,
                                               "efficiency": eff}, indent=2)
                                   + "\n")


if __name__ == "__main__":
    main()
