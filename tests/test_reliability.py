"""Real processes, real files: a killed training run resumes; same seed, same metrics; NaN stops cleanly;
a bad checkpoint is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, clone, here_overrides, tiny_overrides, working_dir, write_corpus

from seqpipe import evaluate, fetch, prepare, train
from seqpipe.config import compose
from seqpipe.errors import SeqpipeError

pytestmark = pytest.mark.slow
# Big enough that one epoch takes a moment, so the kill lands between checkpoints.
RUN = ["trainer.max_epochs=4", "model.hidden_size=64", "data.batch_size=2", "data.bptt=16", "optim.lr=0.003"]


def prepared_cfg(root: Path, extra: list[str] = ()):  # noqa: ANN201
    write_corpus(root / "corpus", n_docs=6, lines=150)
    cfg = compose([*tiny_overrides(root), *RUN, *extra], config_dir=CONF)
    fetch.run(cfg)
    prepare.run(cfg)
    return cfg


ONE_EPOCH = ["trainer.max_epochs=1"]  # of the tiny run of conftest (not RUN: these tests need no time to kill in)


def at(root: Path, extra: list[str] = ()):  # noqa: ANN201
    """The config of a tiny run in `root` (the corpus named relative to it: run it from inside `root`)."""
    return compose([*here_overrides(root), *ONE_EPOCH, *extra], config_dir=CONF)


def fresh(root: Path):  # noqa: ANN201
    """A corpus in `root`, fetched, prepared and trained for one epoch; its config."""
    write_corpus(root / "corpus")
    with working_dir(root):
        cfg = at(root)
        fetch.run(cfg)
        prepare.run(cfg)
        train.run(cfg)
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny run, trained once for the tests below (not evaluated, not registered); each works on a `clone`."""
    root = tmp_path_factory.mktemp("trained")
    fresh(root)
    return root


def train_in_subprocess(root: Path) -> subprocess.Popen:
    code = ("import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from conftest import *; "
            "from seqpipe import train; from seqpipe.config import compose; "
            f"from test_reliability import RUN; root = Path({str(root)!r}); "
            "train.run(compose([*tiny_overrides(root), *RUN], config_dir=CONF))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_killed_training_resumes_and_matches_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    with working_dir(whole.mkdir() or whole):
        reference = train.run(prepared_cfg(whole))
    with working_dir(killed.mkdir() or killed):
        cfg = prepared_cfg(killed)
    proc = train_in_subprocess(killed)
    history_path = killed / "models" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not history_path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    assert proc.poll() is None, f"training ended before it could be killed:\n{proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch_at_kill = torch.load(history_path, weights_only=True)["epoch"]
    assert epoch_at_kill < 3  # killed before the end
    with working_dir(killed):
        resumed = train.run(cfg)
    print(f"resume: uninterrupted best val loss {reference['best_val_loss']:.6f}, killed at epoch {epoch_at_kill} "
          f"and resumed {resumed['best_val_loss']:.6f}")
    assert resumed["run_id"] == json.loads((killed / "models" / "run.json").read_text())["run_id"]
    assert resumed["steps"] == reference["steps"] and resumed["epochs"] == reference["epochs"]
    assert resumed["best_val_loss"] == pytest.approx(reference["best_val_loss"], rel=1e-3)
    history = (killed / "reports" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 4  # every epoch's row, those before the kill included


def test_same_seed_same_metrics(trained, tmp_path):
    results = []
    for root in (clone(trained, tmp_path / "a"), tmp_path / "b"):  # trained before, and again here
        if root.name == "b":
            fresh(root.mkdir() or root)
        with working_dir(root):
            results.append(evaluate.run(at(root))["test/loss"])
    assert results[0] == results[1]


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(trained, tmp_path):
    tmp_path = clone(trained, tmp_path / "project")
    with working_dir(tmp_path):
        cfg = at(tmp_path)
        # An interrupted run whose optimizer is about to diverge: its checkpoint's learning rate is huge.
        last = tmp_path / "models" / "checkpoints" / "last.ckpt"
        ckpt = torch.load(last, weights_only=True)
        ckpt["optimizer_states"][0]["param_groups"][0]["lr"] = float("inf")
        ckpt["lr_schedulers"][0]["base_lrs"] = [float("inf")]
        torch.save(ckpt, last)
        before = last.read_bytes()
        cfg.trainer.max_epochs = 3
        run = json.loads((tmp_path / "models" / "run.json").read_text())
        (tmp_path / "models" / "run.json").write_text(json.dumps(
            {**run, "complete": False, "fingerprint": train.fingerprint(cfg, train.data_digest(cfg.paths.prepared))}))
        with pytest.raises(SeqpipeError, match="the training loss became (nan|inf)"):
            train.run(cfg)
        assert last.read_bytes() == before


def test_corrupt_checkpoint_is_refused_and_kept(trained, tmp_path):
    tmp_path = clone(trained, tmp_path / "project")
    with working_dir(tmp_path):
        cfg = at(tmp_path)
        best = tmp_path / "models" / "checkpoints" / "best.ckpt"
        best.write_bytes(best.read_bytes()[: 1000])  # truncated
        metrics = tmp_path / "reports" / "metrics.json"
        with pytest.raises(SeqpipeError, match="best.ckpt.*cannot be loaded.*dvc repro -f train"):
            evaluate.run(cfg)
        assert best.stat().st_size == 1000 and not metrics.exists()


def test_prepare_killed_half_way_leaves_no_output_and_reruns_clean(tmp_path):
    write_corpus(tmp_path / "corpus", n_docs=40, lines=3000)  # a few MB
    cfg = compose(tiny_overrides(tmp_path), config_dir=CONF)
    with working_dir(tmp_path):
        fetch.run(cfg)
    # prepare writes its arrays in milliseconds: the child pauses after its first array, so the kill lands mid-write
    code = ("import sys, time; sys.path.insert(0, 'tests'); from pathlib import Path; from conftest import *; "
            "import numpy as np; from seqpipe import prepare; from seqpipe.config import compose; "
            "save = np.save; np.save = lambda *a, **k: (save(*a, **k), time.sleep(60)); "
            f"prepare.run(compose(tiny_overrides(Path({str(tmp_path)!r})), config_dir=CONF))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    data = tmp_path / "data"
    deadline = time.time() + 60
    while not list(data.glob(".prepared.*.tmp/train.npy")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # wait until it has written part of its output
    assert proc.poll() is None, "prepare ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (data / "prepared").exists()  # nothing half-written where the next stage looks
    with working_dir(tmp_path):
        stats = prepare.run(cfg)
    assert sorted(p.name for p in data.iterdir()) == ["prepared", "raw"]  # the killed run's temporary is gone
    assert stats["train_tokens"] > 1_000_000


def test_vocabulary_mismatch_is_refused(trained, tmp_path):
    tmp_path = clone(trained, tmp_path / "project")
    with working_dir(tmp_path):
        cfg = at(tmp_path)
        vocab = tmp_path / "data" / "prepared" / "vocab.json"
        data = json.loads(vocab.read_text())
        vocab.write_text(json.dumps({**data, "tokens": [*data["tokens"], "\u2603"]}))
        with pytest.raises(SeqpipeError, match="trained with a vocabulary of .* but the prepared data has"):
            evaluate.run(cfg)


def test_concurrent_registrations_do_not_corrupt_the_store(trained, tmp_path):
    import mlflow

    tmp_path = clone(trained, tmp_path / "project")
    with working_dir(tmp_path):
        cfg = at(tmp_path)
        evaluate.run(cfg)
    # The three start registering together: each, its imports done, says so and waits for the word (started alone,
    # one on a loaded machine could find another's version already registered and rightly add none).
    ready, go = tmp_path / "ready", tmp_path / "go"
    ready.mkdir()
    code = (f"import os, sys, time; sys.path.insert(0, {str(ROOT / 'tests')!r}); from pathlib import Path; "
            "from conftest import *; import mlflow, torch; from seqpipe import register; "
            "from seqpipe.config import compose; "
            f"cfg = compose([*here_overrides(Path({str(tmp_path)!r})), *{ONE_EPOCH!r}], config_dir=CONF); "
            f"Path({str(ready)!r}, str(os.getpid())).touch()\n"
            f"while not Path({str(go)!r}).exists(): time.sleep(0.01)\n"
            "register.run(cfg)")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    deadline = time.monotonic() + 300
    while len(list(ready.iterdir())) < 3 and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    failed = [err[-3000:] for p, err in zip(procs, errors) if p.returncode != 0]
    assert not failed, failed
    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='seqpipe-text_file'"))
    assert versions == [1, 2, 3]
    assert int(client.get_model_version_by_alias("seqpipe-text_file", "champion").version) in versions
