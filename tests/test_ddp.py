"""DDP on CPU (trainer=ddp_cpu: two processes, gloo), as `seqpipe train` and the DVC stage run it: the same losses
as one process with the same global batch, one MLflow run, checkpoints that load, ranks that share the data without
overlap, and evaluation in one process. Lightning starts the second rank by re-running the command, so every DDP
run here is a subprocess."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from conftest import CONF, free_port, tiny_overrides, working_dir, write_corpus, write_reviews

from seqpipe import evaluate, fetch, prepare, train
from seqpipe.config import compose, write_params
from seqpipe.data.meta import prepared_meta
from seqpipe.data.streams import StreamDataModule, batchify
from seqpipe.evaluate import load_checkpoint

pytestmark = pytest.mark.slow
REL_TOL = 1e-4  # DDP vs one process, per-epoch train/loss and val/loss (measured: equal to the last digit)
BIN = Path(sys.executable).parent
ENV = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "SEQPIPE_CONF_DIR": str(CONF)}


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "seqpipe", *argv], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _runs(store: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids)


def _lm_overrides(root: Path, store: str) -> list[str]:
    """The tiny LM run of conftest, with its store, and batch sizes and output folders left to the caller."""
    drop = ("paths.models", "paths.reports", "mlflow.tracking_uri", "data.batch_size", "data.eval_batch_size")
    keep = [o for o in tiny_overrides(root) if not o.startswith(drop)]
    return [*keep, f"mlflow.tracking_uri=sqlite:///{root / store}"]


def _lm_ddp(root: Path, name: str) -> list[str]:
    """The DDP side of `lm`: 4 streams per rank, tracked in NAME.db."""
    return [*_lm_overrides(root, f"{name}.db"), "data.batch_size=4", "data.eval_batch_size=2"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A tiny LM trained twice for 2 epochs with the same global batch: by `seqpipe train trainer=ddp_cpu` with 4
    streams per rank (Hydra folder ddp/, store ddp.db), and by one process with 8 streams (one/, one.db)."""
    root = tmp_path_factory.mktemp("ddp_lm")
    write_corpus(root / "corpus")
    with working_dir(root):
        cfg = compose(tiny_overrides(root), config_dir=CONF)
        fetch.run(cfg)
        prepare.run(cfg)
        done = _run(["train", "trainer=ddp_cpu", *_lm_ddp(root, "ddp"), f"hydra.run.dir={root / 'ddp'}"], root)
        one = compose([*_lm_overrides(root, "one.db"), "data.batch_size=8", "data.eval_batch_size=4",
                       f"paths.models={root / 'one/models'}", f"paths.reports={root / 'one/reports'}"],
                      config_dir=CONF)
        train.run(one)
    return root, done


def _history(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def _same_losses(history: Path, reference: Path, rel_tol: float = REL_TOL) -> None:
    """Two runs' history.csv: as many epochs, the same optimizer steps, per-epoch losses within rel_tol."""
    ours, theirs = _history(history), _history(reference)
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert a["step"] == b["step"]  # the same number of optimizer steps
        for key in ("train/loss", "val/loss"):
            assert math.isclose(float(a[key]), float(b[key]), rel_tol=rel_tol), (key, a[key], b[key])


def test_ddp_losses_match_one_process_with_the_same_global_batch(lm):
    root, done = lm
    _same_losses(root / "ddp/reports/history.csv", root / "one/reports/history.csv")
    assert done.stdout.count("train: best val/loss") == 1  # rank 1 reports nothing


def test_ddp_run_is_one_mlflow_run_in_one_hydra_folder(lm):
    root, _ = lm
    (run,) = _runs(root / "ddp.db")
    client = mlflow.MlflowClient(f"sqlite:///{root / 'ddp.db'}")
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2  # one value an epoch, from rank 0
    assert run.data.params["trainer.strategy"] == "ddp"
    saved = json.loads((root / "ddp/models/run.json").read_text())
    assert saved["run_id"] == run.info.run_id and saved["complete"]
    assert (root / "ddp/train_ddp_process_1.log").exists()  # rank 1 ran in the same folder
    assert not (root / "outputs").exists()


def test_ddp_checkpoint_loads_and_predicts(lm):
    root, _ = lm
    meta = prepared_meta(compose(tiny_overrides(root), config_dir=CONF))
    module = load_checkpoint(root / "ddp/models/checkpoints/best.ckpt", meta)
    logits, _ = module(torch.tensor([[1, 5, 7]]))
    assert logits.shape == (1, 3, meta["inputs"]["vocab_size"]) and torch.isfinite(logits).all()


def test_evaluate_after_ddp_runs_once_in_one_process(lm):
    root, _ = lm
    cfg = compose([*_lm_overrides(root, "ddp.db"), f"paths.models={root / 'ddp/models'}",
                   f"paths.reports={root / 'ddp/reports'}"], config_dir=CONF)
    with working_dir(root):
        metrics = evaluate.run(cfg)
    assert metrics["test/loss"] > 0 and (root / "ddp/reports/metrics.json").is_file()
    (run,) = _runs(root / "ddp.db")  # no second run
    client = mlflow.MlflowClient(f"sqlite:///{root / 'ddp.db'}")
    assert len(client.get_metric_history(run.info.run_id, "test/loss")) == 1


def test_language_model_streams_are_split_across_ranks(lm):
    root, _ = lm
    dm = StreamDataModule(str(root / "data/prepared"), batch_size=4, bptt=32)
    parts = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        parts.append(dm._streams("train", 4, strict=True))
    both = batchify(np.load(root / "data/prepared/train.npy"), 8)
    assert torch.equal(torch.cat(parts), both)  # rank r: rows [4r, 4r + 4), the rows one process with 8 streams reads


# Two nodes: torchrun started twice on 127.0.0.1 with one process each (node 0 hosts the rendezvous), both running
# the same `seqpipe train` into the same Hydra folder, as two machines sharing a filesystem would (docs/training.md).
TWO_NODES = ["trainer=ddp_cpu", "trainer.devices=1", "+trainer.num_nodes=2"]


def _start_nodes(root: Path, name: str) -> list[subprocess.Popen]:
    """The DDP run of `lm` as two torchrun nodes of one process each, in folder NAME, tracked in NAME.db; each node's
    output appended to NAME-node{0,1}.log."""
    port = free_port()
    env = {**ENV, "OMP_NUM_THREADS": "1"}  # a core per node: two 2-thread processes on 2 cores slow each other
    procs = []
    for node in (0, 1):
        argv = [str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", f"--node-rank={node}",
                "--master-addr", "127.0.0.1", f"--master-port={port}",
                str(BIN / "seqpipe"), "train", *TWO_NODES, *_lm_ddp(root, name), f"hydra.run.dir={root / name}"]
        with open(root / f"{name}-node{node}.log", "a") as log:
            procs.append(subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return procs


def _node_logs(root: Path, name: str) -> str:
    return "\n".join(f"--- node {n}:\n" + (root / f"{name}-node{n}.log").read_text()[-3000:] for n in (0, 1))


def _kill(proc: subprocess.Popen) -> None:
    """What losing its machine does to a node: its torchrun agent and the training process the agent started (in a
    session of its own) killed at once."""
    import psutil

    agent = psutil.Process(proc.pid)
    for p in [agent, *agent.children(recursive=True)]:
        p.suspend()  # stopped first, so the agent cannot restart or outlive its worker
    for p in [*agent.children(recursive=True), agent]:
        p.kill()
    proc.wait()


def _finish(procs: list[subprocess.Popen], root: Path, name: str) -> None:
    for proc in procs:
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                _kill(p) if p.poll() is None else None
            raise AssertionError(f"two-node run {name} did not end in 300 s:\n{_node_logs(root, name)}") from None
    assert [p.returncode for p in procs] == [0, 0], _node_logs(root, name)


def test_two_nodes_are_one_run_with_the_losses_of_one_node(lm):
    root, _ = lm
    start = time.monotonic()
    _finish(_start_nodes(root, "nodes"), root, "nodes")
    print(f"two nodes (torchrun x2, 1 process each): {time.monotonic() - start:.1f} s")
    _same_losses(root / "nodes/reports/history.csv", root / "ddp/reports/history.csv")
    (run,) = _runs(root / "nodes.db")  # one MLflow run, from rank 0 on node 0
    assert run.info.status == "FINISHED" and run.data.params["trainer.num_nodes"] == "2"
    assert sorted(p.name for p in (root / "nodes/models/checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    logs = _node_logs(root, "nodes")
    assert logs.count("train: best val/loss") == 1, logs  # rank 1, on node 1, reports nothing


def test_two_nodes_resume_after_one_node_is_killed(lm):
    """Node 1 is lost after the first epoch's checkpoint: node 0 fails at its next exchange instead of waiting, and
    the same two commands rerun resume the same MLflow run from last.ckpt to the losses of an uninterrupted run."""
    root, _ = lm
    procs, last = _start_nodes(root, "killed"), root / "killed/models/checkpoints/last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    _kill(procs[1])
    assert procs[0].poll() is None, f"node 0 ended before node 1 was killed:\n{_node_logs(root, 'killed')}"
    saved = json.loads((root / "killed/models/run.json").read_text())
    assert not saved.get("complete"), "the run finished before node 1 could be killed"
    start = time.monotonic()
    try:
        assert procs[0].wait(timeout=120) != 0  # node 0 notices: it does not wait forever for a lost peer
    except subprocess.TimeoutExpired:
        _kill(procs[0])
        raise AssertionError(f"node 0 still ran 120 s after node 1 was lost:\n{_node_logs(root, 'killed')}") from None
    print(f"node 0 exited {time.monotonic() - start:.1f} s after node 1 was killed")
    assert torch.load(last, weights_only=True)["epoch"] == 0  # killed during the second (last) epoch
    _finish(_start_nodes(root, "killed"), root, "killed")
    resumed = [line for line in _node_logs(root, "killed").splitlines() if line.startswith("train: resuming from")]
    assert len(resumed) == 1 and resumed[0].split()[3].endswith("last.ckpt"), resumed  # said once, by rank 0
    (run,) = _runs(root / "killed.db")  # the same run, resumed
    assert run.info.run_id == saved["run_id"] and run.info.status == "FINISHED"
    client = mlflow.MlflowClient(f"sqlite:///{root / 'killed.db'}")
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2  # one value an epoch, none twice
    # a resume restarts at the epoch boundary: as test_reliability's one-process resume, within 1e-3
    _same_losses(root / "killed/reports/history.csv", root / "ddp/reports/history.csv", rel_tol=1e-3)


def test_classifier_trained_by_the_dvc_stage_under_ddp_evaluates_once(tmp_path):
    """`seqpipe stage train` (DVC's command) with trainer=ddp_cpu: Lightning re-runs `seqpipe stage train` for rank 1;
    then evaluate (evaluate_labels, no Trainer) in one process."""
    write_reviews(tmp_path / "reviews.csv", n=200)
    overrides = ["trainer=ddp_cpu", "recipe=text_csv", f"recipe.fetch.path={tmp_path / 'reviews.csv'}",
                 "recipe.fetch.text_column=review", "recipe.fetch.label_column=sentiment", "prepare.max_len=12",
                 "model.hidden_size=8", "model.embedding_dim=8", "trainer.max_epochs=1",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                 f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    with working_dir(tmp_path):
        write_params(overrides, tmp_path / "params.yaml", config_dir=CONF)
        cfg = compose(overrides, config_dir=CONF)
        fetch.run(cfg)
        prepare.run(cfg)
        _run(["stage", "train"], tmp_path)
        metrics = evaluate.run(cfg)
    assert 0 <= metrics["test/acc"] <= 1
    (run,) = _runs(tmp_path / "mlflow.db")
    assert "test/acc" in run.data.metrics and "train/loss" in run.data.metrics


# Fits a tiny classifier under strategy=ddp on 2 CPU processes and writes, per rank, the train examples it read and
# the batches it ran each epoch. A script because Lightning starts rank 1 by re-running sys.argv.
SEEN = textwrap.dedent('''
    import json, sys
    from pathlib import Path

    import lightning.pytorch as L
    from torch.utils.data import Dataset

    from seqpipe.config import compose
    from seqpipe.data.meta import prepared_meta
    from seqpipe.train import build_datamodule, build_module

    out, overrides = Path(sys.argv[1]), sys.argv[2:]

    class Recording(Dataset):
        def __init__(self, ds, trainer, seen):
            self.ds, self.trainer, self.seen, self.lengths = ds, trainer, seen, ds.lengths

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            self.seen.setdefault(self.trainer.current_epoch, []).append(int(i))
            return self.ds[i]

    class Seen(L.Callback):
        def __init__(self):
            self.seen, self.batches = {}, {}

        def setup(self, trainer, pl_module, stage):  # after the data module's setup, before its loaders
            dm = trainer.datamodule
            dm.splits["train"] = Recording(dm.splits["train"], trainer, self.seen)

        def on_train_batch_end(self, trainer, *args):
            self.batches[trainer.current_epoch] = self.batches.get(trainer.current_epoch, 0) + 1

        def on_train_end(self, trainer, pl_module):
            n = len(trainer.datamodule.splits["train"])
            record = {"n": n, "batch_size": trainer.datamodule.batch_size, "seen": self.seen, "batches": self.batches}
            (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))

    cfg = compose(overrides)
    meta = prepared_meta(cfg)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler=False, max_epochs=2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[Seen()])
    trainer.fit(build_module(cfg, meta), datamodule=build_datamodule(cfg, meta))
''')


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """Prepared reviews: 168 train examples, so 21 batches of 8 (odd: the ranks need one batch repeated)."""
    root = tmp_path_factory.mktemp("ddp_clf")
    write_reviews(root / "reviews.csv", n=212)
    overrides = ["recipe=text_csv", f"recipe.fetch.path={root / 'reviews.csv'}", "recipe.fetch.text_column=review",
                 "recipe.fetch.label_column=sentiment", "prepare.max_len=12", "model.hidden_size=8",
                 "model.embedding_dim=8", "data.batch_size=8", "train.carry_state=false",
                 f"paths.raw={root / 'data/raw'}", f"paths.prepared={root / 'data/prepared'}"]
    with working_dir(root):
        cfg = compose(overrides, config_dir=CONF)
        fetch.run(cfg)
        prepare.run(cfg)
    (root / "seen.py").write_text(SEEN)
    return root, overrides


@pytest.mark.parametrize("bucketing", [True, False])
def test_ranks_read_disjoint_examples_and_run_as_many_batches(reviews, bucketing):
    root, overrides = reviews
    out = root / f"seen-{bucketing}"
    out.mkdir()
    done = subprocess.run([sys.executable, str(root / "seen.py"), str(out), *overrides,
                           f"data.bucketing={str(bucketing).lower()}"], cwd=root, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    n, bs = r0["n"], r0["batch_size"]
    if bucketing:  # BucketBatchSampler deals batches, one repeated when their number is odd
        batches, repeats = -(-n // bs), -(-n // bs) % 2
        per_rank, repeated = (batches + repeats) // 2, repeats * bs
    else:  # DistributedSampler deals examples, one repeated when their number is odd
        per_rank, repeated = -(-(n + n % 2) // 2 // bs), n % 2
    epochs = []
    for epoch in ("0", "1"):
        a, b = r0["seen"][epoch], r1["seen"][epoch]
        assert r0["batches"][epoch] == r1["batches"][epoch] == per_rank  # no rank waits for the other at the end
        assert set(a) | set(b) == set(range(n))  # every example read
        assert len(set(a) & set(b)) <= repeated and len(a) + len(b) <= n + repeated
        assert len(a) == len(set(a)) and len(b) == len(set(b))
        epochs.append(a)
    # every epoch reshuffles: Lightning sets DistributedSampler's epoch, SeqModule that of the bucketing sampler
    assert epochs[0] != epochs[1]
