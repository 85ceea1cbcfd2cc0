"""seqpipe study gating: hidden sizes matched by parameter count, a tiny study of the adding problem at two lengths
tracked as one parent run with a child run per cell and length, its table and plots, and nothing registered."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import CONF, working_dir

from seqpipe.config import compose
from seqpipe.errors import SeqpipeError
from seqpipe.experiments import study


def tiny(root: Path, *extra: str) -> list[str]:
    return ["recipe=adding", "recipe.fetch.size=200", "study.lengths=[6,10]", "model.hidden_size=16",
            "model.embedding_dim=4", "data.batch_size=20", "data.eval_batch_size=40", "optim.warmup_steps=0",
            "train.log_every_n_steps=1", "study.trainer.max_epochs=2", "study.trainer.limit_train_batches=3",
            "study.trainer.limit_val_batches=1", "study.threads=1", f"study.out={root}/studies",
            f"study.work={root}/work", f"paths.downloads={root}/downloads",
            f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", *extra]


def test_matched_size_is_the_nearest_count():
    count = {h: 10 * h * h for h in range(1, 200)}.__getitem__
    assert study.matched_size(count, 10 * 37 * 37) == 37
    assert study.matched_size(count, 10 * 37 * 37 + 370) == 37  # 37: 13,690 + 370 is nearer than 38: 14,440
    assert study.matched_size(count, 10 * 37 * 37 + 380) == 38
    assert study.matched_size(count, 3) == 1


def test_a_tiny_study_of_the_adding_problem(tmp_path):
    overrides = tiny(tmp_path)
    with working_dir(tmp_path):
        result = study.run(compose(overrides, config_dir=CONF), "gating", overrides)
    out = tmp_path / "studies" / "gating-adding"
    assert Path(result["folder"]).resolve() == out
    assert sorted(p.name for p in out.iterdir()) == ["gradient_flow.png", "results.csv", "results.md",
                                                       "test_loss.png", "val_loss.png"]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["length"], r["cell"]) for r in rows] == [(t, c) for t in ("6", "10") for c in ("rnn", "gru", "lstm")]
    lstm = next(r for r in rows if r["cell"] == "lstm")
    assert lstm["hidden_size"] == "16" and float(lstm["params_vs_reference"]) == 0
    assert all(abs(float(r["params_vs_reference"])) < 0.05 for r in rows)  # matched within 5% at this tiny size
    # by hand, with 2 features projected to 4 and a 1-output head (h + 1): lstm 4(4h + h^2 + 2h) + 12 + 17 at h = 16:
    # 1,437; rnn h^2 + 7h + 13 is 1,407 at 34 (1,483 at 35); gru 3h^2 + 19h + 13 is 1,457 at 19 (1,297 at 18)
    assert {r["cell"]: (int(r["hidden_size"]), int(r["params"])) for r in rows} == \
        {"rnn": (34, 1407), "gru": (19, 1457), "lstm": (16, 1437)}
    assert all(float(r["test/loss"]) > 0 and float(r["test/mean_baseline_loss"]) > 0 for r in rows)
    assert all(r["grad_k"] == str(int(r["length"]) - 1) and float(r["grad_ratio"]) > 0 for r in rows)
    md = (out / "results.md").read_text()
    assert "| T | cell | hidden | parameters | test/loss |" in md and "Chung et al. (2014)" in md
    assert md.count("**T = ") == 2 and "![gradient flow](gradient_flow.png)" in md

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("seqpipe-adding").experiment_id],
                              "tags.study = 'gating-adding'")
    (parent,) = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "study-gating-adding"
    assert sorted(r.info.run_id for r in children) == sorted(r["run_id"] for r in rows)
    assert {(r.data.tags["study.cell"], r.data.tags["study.length"]) for r in children} == \
        {(c, t) for t in ("6", "10") for c in ("rnn", "gru", "lstm")}
    assert all("test/loss" in r.data.metrics and r.data.params["train.gradient_flow"] == "True" for r in children)
    assert {a.path for a in client.list_artifacts(children[0].info.run_id, "gradient_flow")} >= \
        {"gradient_flow/epoch_000.png", "gradient_flow/epoch_001.json"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {p.name for p in out.iterdir()}
    assert client.search_registered_models() == []


def test_bad_studies_are_refused_before_any_work(tmp_path):
    with pytest.raises(SeqpipeError, match="no study called 'gates'; the studies are: gating"):
        study.run(compose(tiny(tmp_path), config_dir=CONF), "gates")
    with pytest.raises(SeqpipeError, match=r"study.cells=\['rnn', 'transformer'\] must list cells among"):
        study.run(compose(tiny(tmp_path, "study.cells=[rnn,transformer]"), config_dir=CONF), "gating")
    with pytest.raises(SeqpipeError, match="study.parallel=0 must be a positive integer"):
        study.run(compose(tiny(tmp_path, "study.parallel=0"), config_dir=CONF), "gating")
    with pytest.raises(SeqpipeError, match="a bidirectional encoder does not have: add model.bidirectional=false"):
        study.run(compose(tiny(tmp_path, "model.bidirectional=true"), config_dir=CONF), "gating")
    assert not (tmp_path / "work").exists() and not (tmp_path / "mlflow.db").exists()
    cli = subprocess.run([str(Path(sys.executable).parent / "seqpipe"), "study", "gating", "+study.extra=1"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 2 and "'+study.extra=1' adds a key that seqpipe does not read" in cli.stderr


@pytest.mark.slow
def test_runs_in_parallel_worker_processes_give_the_same_table(tmp_path):
    overrides = tiny(tmp_path, "study.lengths=[6]", "study.parallel=2")
    with working_dir(tmp_path):
        result = study.run(compose(overrides, config_dir=CONF), "gating", overrides)
    rows = list(csv.DictReader(open(tmp_path / "studies" / "gating-adding" / "results.csv")))
    assert [(r["cell"], r["hidden_size"]) for r in rows] == [("rnn", "34"), ("gru", "19"), ("lstm", "16")]
    assert [r["run_id"] for r in rows] == [r["run_id"] for r in result["rows"]]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert all(client.get_run(r["run_id"]).data.tags["mlflow.parentRunId"] == result["parent_run"] for r in rows)
    assert all(client.get_run(r["run_id"]).info.status == "FINISHED" for r in rows)
