"""Shared fixtures: a tiny real corpus and configs composed from the project's own conf/ (Hydra compose)."""

from __future__ import annotations

import contextlib
import csv
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from seqpipe import evaluate, fetch, prepare, register, train
from seqpipe.config import compose

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the king my lord good night what say you sir love heart fair sweet death noble speak "
         "come hence thou art and shall not be so well here now").split()


def write_corpus(directory: Path, n_docs: int = 5, lines: int = 60, seed: int = 0) -> Path:
    """A few small plain-text 'plays': speaker lines and verse drawn from a fixed word list."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for d in range(n_docs):
        out = []
        for _ in range(lines):
            speaker = rng.choice(["ROMEO", "JULIET", "NURSE", "KING"])
            verse = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
            out.append(f"{speaker}:\n{verse.capitalize()}.\n")
        (directory / f"play{d}.txt").write_text("\n".join(out), encoding="utf-8")
    return directory


TINY = [
    "recipe=text_file",
    "data.batch_size=4", "data.bptt=32", "data.eval_batch_size=2",
    "model.embedding_dim=16", "model.hidden_size=32",
    "optim.lr=0.01", "optim.warmup_steps=0",
    "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "train.log_every_n_steps=5",
    "evaluate.sample_tokens=40",
    "prepare.val_fraction=0.2", "prepare.test_fraction=0.2",
]


def tiny_overrides(root: Path) -> list[str]:
    """Overrides that point every path of a run into `root` and keep the run to seconds."""
    return [*TINY, f"recipe.fetch.paths=[{root / 'corpus'}]", f"paths.downloads={root / 'downloads'}",
            f"paths.raw={root / 'data/raw'}", f"paths.prepared={root / 'data/prepared'}",
            f"paths.models={root / 'models'}", f"paths.reports={root / 'reports'}",
            f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}"]


@pytest.fixture
def tiny_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DictConfig:
    """A composed config for a seconds-long run on a tiny corpus in tmp_path (MLflow in tmp_path too)."""
    write_corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts under the working directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return compose(tiny_overrides(tmp_path), config_dir=ROOT / "conf")


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[Path]:
    """Run inside `path` (MLflow writes artifacts under the working directory), with no MLFLOW_TRACKING_URI."""
    old, uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(old)
        if uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = uri


POS, NEG, FILL = ["good", "great", "lovely", "superb"], ["bad", "awful", "boring", "dull"], \
    ["the", "film", "was", "quite", "a", "plot", "and", "cast", "really", "very"]


def write_reviews(path: Path, n: int = 600, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment", "site"])
        for _ in range(n):
            label = rng.choice(["neg", "pos"])
            words = [rng.choice(FILL) for _ in range(rng.randint(3, 25))]
            words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label == "pos" else NEG))
            w.writerow([" ".join(words) + "!", label, rng.choice(["siteA", "siteB"])])


def run_pipeline(root: Path, overrides: list[str], store: Path | None = None) -> dict:
    """fetch -> prepare -> train -> evaluate -> register with every path under `root` (MLflow: `store`)."""
    cfg = compose([*overrides, f"paths.raw={root}/data/raw", f"paths.prepared={root}/data/prepared",
                   f"paths.models={root}/models", f"paths.reports={root}/reports",
                   f"mlflow.tracking_uri=sqlite:///{store or root / 'mlflow.db'}", "trainer.enable_progress_bar=false",
                   "trainer.enable_model_summary=false"], config_dir=ROOT / "conf")
    fetch.run(cfg)
    stats = prepare.run(cfg)
    train.run(cfg)
    metrics = evaluate.run(cfg)
    registered = register.run(cfg)
    return {"cfg": cfg, "stats": stats, "metrics": metrics, "registered": registered}
