"""PyTorch against ONNX Runtime (float and int8) in one run: file size, per-token latency of batch-1 generation, the
language model's test bits per character (the same chunks for all three), and batch-64 classification throughput.

Run from the repo root after `dvc repro` (needs the registered language model and data/prepared/test.npy):
    python bench/onnx_runtime.py [--model models:/seqpipe-shakespeare@champion] [--tokens 200] [--json FILE]
                                 [--classifier models:/seqpipe-imdb@champion [--classifier-uri URI]
                                  [--classifier-test PREPARED/test.npz]]
Without --classifier, the classification rows use an IMDB-sized bidirectional LSTM with random weights (speed only);
with --classifier-test (the test split its recipe prepared), the test accuracy of each runtime too.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from common import report  # bench/common.py

from seqpipe.models.nets import SequenceClassifier
from seqpipe.serving.onnx_export import OnnxNet, export_model


def load(uri: str, tracking_uri: str) -> object:
    from seqpipe.cli.predict import load_model

    return load_model(uri, tracking_uri, None).unwrap_python_model()


def per_token_ms(net: torch.nn.Module, tokens: int) -> float:
    """Median over 3 runs of greedy batch-1 generation, milliseconds per token."""
    times = []
    for _ in range(3):
        state, tok = None, torch.tensor([1])
        t = time.perf_counter()
        with torch.no_grad():
            for _ in range(tokens):
                logits, state = net.step(tok, state)
                tok = logits.argmax(-1)
        times.append((time.perf_counter() - t) / tokens * 1000)
    return statistics.median(times)


def bits_per_token(net: torch.nn.Module, ids: np.ndarray, rows: int = 16, steps: int = 128) -> float:
    """Cross-entropy in bits over the first rows x steps x k tokens of the test stream, each chunk from a fresh
    state (the same protocol for every runtime)."""
    n = (len(ids) - 1) // (rows * steps) * rows * steps
    x = torch.from_numpy(ids[:n].astype(np.int64)).view(-1, rows, steps)
    y = torch.from_numpy(ids[1:n + 1].astype(np.int64)).view(-1, rows, steps)
    total = 0.0
    with torch.no_grad():
        for xb, yb in zip(x[:8], y[:8]):
            logits, _ = net(xb)
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), yb.reshape(-1),
                                                             reduction="sum"))
    return total / (min(8, len(x)) * rows * steps) / math.log(2)


def sequences_per_s(net: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor, repeat: int = 5) -> float:
    with torch.no_grad():
        net(x, lengths)
        t = time.perf_counter()
        for _ in range(repeat):
            net(x, lengths)
    return repeat * x.size(0) / (time.perf_counter() - t)


def accuracy(net: torch.nn.Module, test: Path, batch: int = 64) -> float:
    """Test accuracy over the prepared examples of `test` (seqpipe.data.examples), in batches of similar length."""
    from seqpipe.data.batching import pad_collate
    from seqpipe.data.examples import ExampleDataset

    data = ExampleDataset(test)
    order = np.argsort(data.lengths, kind="stable")
    right = 0
    with torch.no_grad():
        for start in range(0, len(order), batch):
            b = pad_collate([data[int(i)] for i in order[start:start + batch]])
            logits, _ = net(b["x"], b["lengths"])
            right += int((logits.argmax(-1) == b["y"]).sum())
    return right / len(order)


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.onnx")) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models:/seqpipe-shakespeare@champion")
    ap.add_argument("--classifier", default=None)
    ap.add_argument("--classifier-uri", default=None, help="the classifier's tracking URI (default: --tracking-uri)")
    ap.add_argument("--classifier-test", type=Path, default=None, help="the classifier's prepared test.npz")
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    rows: dict[str, float] = {"threads (torch and ONNX Runtime)": threads}
    lm = load(args.model, args.tracking_uri)
    buf = io.BytesIO()
    torch.save(lm.net.state_dict(), buf)
    rows["LM PyTorch weights (MB)"] = len(buf.getvalue()) / 1e6
    test = Path("data/prepared/test.npy")
    with tempfile.TemporaryDirectory() as tmp:
        runtimes = {"PyTorch": lm.net}
        for q in (None, "int8"):
            folder = Path(tmp) / f"lm-{q}"
            export_model(lm, folder, q)
            rows[f"LM ONNX{' int8' if q else ''} file (MB)"] = size_mb(folder)
            runtimes[f"ONNX Runtime{' int8' if q else ''}"] = OnnxNet(folder, threads)
        for name, net in runtimes.items():
            rows[f"LM batch-1 generation, {name} (ms/token)"] = per_token_ms(net, args.tokens)
        if test.is_file():
            ids = np.load(test)
            for name, net in runtimes.items():
                rows[f"LM test bits/token, {name}"] = bits_per_token(net, ids)
        if args.classifier:
            clf = load(args.classifier, args.classifier_uri or args.tracking_uri)
            net = clf.net
        else:
            clf, net = None, SequenceClassifier(20000, 2, cell="lstm", embedding_dim=128, hidden_size=128,
                                                bidirectional=True).eval()
        served = clf or SimpleNamespace(net=net, meta={"task": "classify"}, limits={}, model="random", vocab=None)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(1, net.encoder.embedding.num_embeddings, (64, 256), generator=g)
        lengths = torch.randint(64, 257, (64,), generator=g)
        lengths[0] = 256
        runtimes = {"PyTorch": net}
        for q in (None, "int8"):
            folder = Path(tmp) / f"clf-{q}"
            export_model(served, folder, q)
            runtimes[f"ONNX Runtime{' int8' if q else ''}"] = OnnxNet(folder, threads)
        for name, n in runtimes.items():
            rows[f"classify batch 64 x 256 tokens, {name} (sequences/s)"] = sequences_per_s(n, x, lengths)
        if clf is not None:
            buf = io.BytesIO()
            torch.save(net.state_dict(), buf)
            rows["classifier PyTorch weights (MB)"] = len(buf.getvalue()) / 1e6
            for q in (None, "int8"):
                rows[f"classifier ONNX{' int8' if q else ''} file (MB)"] = size_mb(Path(tmp) / f"clf-{q}")
        if clf is not None and args.classifier_test:
            for name, n in runtimes.items():
                rows[f"classifier test accuracy, {name}"] = accuracy(n, args.classifier_test)
    report(rows, args.json)


if __name__ == "__main__":
    main()
