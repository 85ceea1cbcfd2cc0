"""docs/adding-a-recipe.md and docs/adding-a-task.md, followed: the code is copied out of the pages into tmp_path, so
the guides cannot drift from what works, and nothing under src/ or conf/ is edited.

A recipe can be added from outside the package (its module on sys.path, its config in a folder of its own), and the
whole pipeline runs on it. A task cannot, today: its methods all work when driven directly, but every stage asks
`seqpipe.tasks.get_task(name)`, a closed `match`, and the config check refuses any other name (the last test)."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONF, run_pipeline, working_dir

from seqpipe import cli, fetch
from seqpipe.config import compose, save_overrides, validate
from seqpipe.data.meta import read_meta
from seqpipe.errors import SeqpipeError
from seqpipe.tasks import NAMES, get_task
from seqpipe.tracking.store import use_tracking_uri

DOCS = Path(__file__).resolve().parents[1] / "docs"


def files_of(page: str) -> dict[str, str]:
    """The code blocks of a docs page that carry a file name (```python title="my_recipe.py"), by that name."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return {name: body for name, body in re.findall(r'^```\w+ title="([^"]+)"\n(.*?)^```$', text, re.S | re.M)}


def write_files(page: str, root: Path) -> dict[str, Path]:
    written = {}
    for name, body in files_of(page).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
        written[name] = path
    return written


@pytest.fixture
def importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """tmp_path on sys.path (as PYTHONPATH puts a user's folder there); the modules the test imported from it are
    forgotten afterwards, so another test's module of the same name is read afresh."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", None) and str(tmp_path) in sys.modules[name].__file__:
            del sys.modules[name]


# --- a recipe: docs/adding-a-recipe.md -------------------------------------------------------------------------


def recipe_overrides(root: Path) -> list[str]:
    """The page's way (b): the user's config folder on Hydra's search path, the recipe chosen by its name."""
    return [f"hydra.searchpath=[file://{root / 'myconf'}]", "recipe=majority"]


def test_the_pages_hold_the_files_the_tests_follow(tmp_path):
    assert set(write_files("adding-a-recipe.md", tmp_path)) == {"my_recipe.py", "myconf/recipe/majority.yaml"}
    assert set(write_files("adding-a-task.md", tmp_path)) == {"my_task.py"}


def test_a_recipe_of_my_own_composes_and_fetches(importable, tmp_path):
    write_files("adding-a-recipe.md", tmp_path)
    cfg = compose([*recipe_overrides(tmp_path), f"paths.raw={tmp_path / 'data/raw'}"], config_dir=CONF)
    validate(cfg)  # what `seqpipe compose` and `seqpipe train` check first
    assert (cfg.recipe.name, cfg.task, cfg.register.model_name) == ("majority", "classify", "seqpipe-majority")
    assert fetch.run(cfg) == {"documents": 600, "characters": pytest.approx(6000, rel=0.2)}
    rows = [json.loads(line) for line in (tmp_path / "data/raw/documents.jsonl").read_text().splitlines()]
    assert len(rows) == 600 and rows[0]["id"] == "maj0"
    assert all(r["label"] == max("ab", key=r["text"].count) and len(r["text"]) % 2 == 1 for r in rows)
    # a bad argument is the recipe's own message, not Hydra's wrapping of it
    with pytest.raises(SeqpipeError, match=r"recipe\.fetch\.size=2: needs at least 3 rows"):
        fetch.run(compose([*recipe_overrides(tmp_path), "recipe.fetch.size=2"], config_dir=CONF))
    # what the page says of way (b): `seqpipe compose` (params.yaml, for DVC) does not save a search path
    with pytest.raises(SeqpipeError, match="seqpipe compose saves key=value overrides only, not 'hydra.searchpath"):
        save_overrides(recipe_overrides(tmp_path), config_dir=tmp_path / "unused")


@pytest.mark.slow
def test_a_recipe_of_my_own_trains_registers_and_serves_without_its_module(importable, tmp_path):
    write_files("adding-a-recipe.md", tmp_path)
    with working_dir(tmp_path):
        out = run_pipeline(tmp_path, recipe_overrides(tmp_path))
    assert out["stats"]["num_classes"] == 2 and out["stats"]["train_examples"] > 300
    history = pd.read_csv(tmp_path / "reports" / "history.csv")
    assert history["val/loss"].iloc[-1] < 0.7 * history["val/loss"].iloc[0]  # it learns
    assert out["metrics"]["test/acc"] > 0.8  # chance: 0.5
    assert out["registered"]["promoted"]

    # the registered model needs none of the recipe's code: forget the module and take its folder off sys.path
    sys.modules.pop("my_recipe")
    sys.path.remove(str(tmp_path))  # monkeypatch restores sys.path after the test
    with pytest.raises(ImportError):
        importlib.import_module("my_recipe")
    use_tracking_uri(out["cfg"].mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/seqpipe-majority@champion")
    texts = ["aaaaabb", "bbbbbba", "abababa", "bbbbbbbbbaa"]
    answer = model.predict(pd.DataFrame({"text": texts}))
    assert answer["label"].tolist() == ["a", "b", "a", "b"]
    assert np.allclose(answer["prob_a"] + answer["prob_b"], 1, atol=1e-5)


# --- a task: docs/adding-a-task.md -----------------------------------------------------------------------------


def mean_rows(n: int = 400, seed: int = 0) -> list[dict]:
    """Frame sequences of 4-16 steps around a level of their own; the target is the sequence's mean."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        frames = rng.uniform(-1, 1) + rng.normal(0, 0.3, size=(int(rng.integers(4, 17)), 1))
        rows.append({"id": f"s{i}", "frames": frames.round(4).tolist(), "target": float(frames.round(4).mean())})
    return rows


def test_a_task_of_my_own_prepares_trains_and_evaluates_when_driven_directly(importable, tmp_path):
    write_files("adding-a-task.md", tmp_path)
    from my_task import L1Regress

    task = L1Regress()
    # a frames recipe (adding) for the config; prepare and the data module read prepare/data/model, not the task
    cfg = compose(["recipe=adding", f"paths.prepared={tmp_path / 'prepared'}", "data.batch_size=16",
                   "model.hidden_size=16", "model.pooling=mean", "prepare.val_fraction=0.15",
                   "prepare.test_fraction=0.15"], config_dir=CONF)
    task.check(cfg)
    with pytest.raises(SeqpipeError, match="prepare.inputs=tokens does not work with task=l1"):
        task.check(compose(["recipe=text_csv", "train.carry_state=false"], config_dir=CONF))

    stats = task.prepare(cfg, mean_rows(), tmp_path / "documents.jsonl")  # the default: prepare_examples
    meta = read_meta(cfg.paths.prepared)
    assert meta["task"] == "l1" and meta["inputs"]["features"] == 1 and stats["train_examples"] == 280
    assert meta["target"]["size"] == 1 and -1 < meta["target"]["median"] < 1

    torch.manual_seed(0)
    dm = task.datamodule(cfg, meta)
    dm.setup("fit")
    net = task.build_net(meta, task.net_config(cfg))
    module = SimpleNamespace(net=net)  # what evaluate reads of the LightningModule
    before = task.evaluate(cfg, module, dm, tmp_path / "reports")
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    for _ in range(4):
        net.train()
        for batch in dm.train_dataloader():
            step = task.step(net, batch, None)
            opt.zero_grad()
            step.loss.backward()
            opt.step()
    after = task.evaluate(cfg, module, dm, tmp_path / "reports")
    assert after["test/loss"] < 0.3 * before["test/loss"]  # the loss falls
    assert after["test/loss"] < 0.3 * after["test/median_baseline_loss"]  # and beats always answering the median


def test_a_task_of_my_own_is_refused_by_name(importable, tmp_path, monkeypatch, capsys):
    """The limit the task page documents: the stages find a task by name through get_task's closed `match`, and the
    config check refuses names outside NAMES, so `seqpipe train task=l1` stops before any work, naming the tasks it
    takes. Lifting this needs a change to the package (docs/adding-a-task.md, "From outside")."""
    write_files("adding-a-task.md", tmp_path)
    import my_task  # importing the class registers nothing

    assert my_task.L1Regress.name == "l1" and "l1" not in NAMES
    allowed = "choose one of: lm, classify, tag, regress, seq2seq, pianoroll, ctc"
    with pytest.raises(SeqpipeError, match=f"task='l1' is not allowed; {allowed}"):
        get_task("l1")
    monkeypatch.setenv("SEQPIPE_CONF_DIR", str(CONF))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "recipe=adding", "task=l1"]) == 2
    assert f"seqpipe: error: task='l1' is not allowed; {allowed}" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made a run folder
