"""The DAG sees every setting and all the code a stage runs: dvc.yaml's train params are what a checkpoint must
match to resume, and every module a stage loads is one of its dependencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONF, FEW_BATCHES, ROOT, TINY, write_corpus, write_reviews

from seqpipe import train
from seqpipe.config import compose, write_params

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = ("fetch", "prepare", "train", "evaluate", "register")


def test_the_resume_fingerprint_covers_the_train_stage_params():
    assert sorted(DVC["stages"]["train"]["params"]) == sorted(train.PARAMS)
    for key in train.NOT_FINGERPRINTED:  # each left out of the fingerprint is one of them, or a key of one
        assert key in train.PARAMS or key.partition(".")[0] in train.PARAMS, key


@pytest.mark.parametrize("override,resumes", [
    ("ctc.spec_augment.freq_masks=2", False), ("ctc.stack=3", False), ("pianoroll.transpose=0", False),
    ("seq2seq.teacher_forcing=0.5", False), ("trainer.max_epochs=9", False), ("model.hidden_size=8", False),
    ("mlflow.timeout_s=9", True), ("trainer.enable_progress_bar=true", True), ("evaluate.temperature=0.1", True),
])
def test_a_changed_setting_the_train_stage_reads_starts_fresh(override, resumes):
    base = compose(TINY, config_dir=CONF)
    changed = compose([*TINY, override], config_dir=CONF)
    assert (train.fingerprint(changed, "d") == train.fingerprint(base, "d")) is resumes
    assert train.fingerprint(base, "d") != train.fingerprint(base, "other data")


def test_every_dependency_exists():
    for name, stage in DVC["stages"].items():
        for dep in stage.get("deps", []):
            if not dep.startswith("$"):
                assert (ROOT / dep).exists(), f"{name}: {dep}"


# Code that cannot change what a stage writes: the package (its version, an import alias), reading and checking
# params.yaml (a refusal stops the stage before it writes), the error type, atomic writes, where MLflow is and the
# Document type. What the command line loads to parse `seqpipe stage NAME` is measured and left out too.
PLUMBING = {"__init__.py", "cli/__init__.py", "cli/commands.py", "config.py", "errors.py", "atomic.py",
            "tracking/__init__.py", "tracking/store.py", "recipes/__init__.py",
            "data/__init__.py", "models/__init__.py"}  # a subpackage's __init__: its docstring only
RECORD = """
import json, os, sys, traceback
# The third-party libraries the stages load, imported once before the forks: each stage's process starts warm
# (~5 s less each), and seqpipe itself is loaded afresh in every stage's own process, which is what is recorded.
import hydra.utils, lightning.pytorch, matplotlib.figure, mlflow.pyfunc, pandas, torch, torchmetrics
assert not [m for m in sys.modules if m.startswith('seqpipe')]

def files(names):
    return sorted({sys.modules[m].__file__ for m in names if m.startswith('seqpipe') and m in sys.modules
                   and getattr(sys.modules[m], '__file__', None)})

def stage(name):
    import seqpipe.cli
    seqpipe.cli.parser()
    command_line = set(sys.modules)
    import seqpipe.config
    seqpipe.config.load_params()
    checks = set(sys.modules)
    code = seqpipe.cli.main(['stage', name])
    with open(f'modules-{name}.json', 'w') as f:
        json.dump({"command_line": files(command_line), "checks": files(checks), "all": files(sys.modules)}, f)
    return code or 0

for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # the stage, in a process of its own
        code = 1
        try:
            code = stage(name)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]):
        sys.exit(f"stage {name} failed")
"""


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["lm", "classify"])
def test_every_module_a_stage_runs_is_one_of_its_dependencies(tmp_path, task):
    """Each stage in a fresh process, as `dvc repro` runs it: the seqpipe modules loaded by the end, less the
    plumbing, are dvc.yaml deps of that stage (fetch: less the task's config rules too, which config.validate loads
    for every stage and which never change raw/)."""
    if task == "lm":
        write_corpus(tmp_path / "corpus")
        overrides = [*TINY, "recipe.fetch.paths=[corpus]"]
    else:
        write_reviews(tmp_path / "reviews.csv")
        overrides = [*[o for o in TINY if not o.startswith("recipe=")], "recipe=text_csv",
                     "recipe.fetch.path=reviews.csv", "recipe.fetch.text_column=review",
                     "recipe.fetch.label_column=sentiment"]
    write_params([*overrides, *FEW_BATCHES], tmp_path / "params.yaml", CONF)  # the modules, not the learning
    env = {**os.environ, "SEQPIPE_CONF_DIR": str(CONF), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    src = ROOT / "src" / "seqpipe"
    done = subprocess.run([sys.executable, "-c", RECORD, *STAGES], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    missing = {}
    for stage in STAGES:
        loaded = json.loads((tmp_path / f"modules-{stage}.json").read_text())
        exempt = set(loaded["command_line"]) | (set(loaded["checks"]) if stage == "fetch" else set())
        needed = [Path(f).resolve().relative_to(src).as_posix() for f in set(loaded["all"]) - exempt]
        deps = [d.removeprefix("src/seqpipe/") for d in DVC["stages"][stage]["deps"] if d.startswith("src/")]
        missing[stage] = sorted(f for f in needed if f not in PLUMBING and not _covered(f, deps))
    assert missing == {stage: [] for stage in STAGES}
