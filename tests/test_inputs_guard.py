"""Bad config and setup inputs that stop a command with one line (exit 2) and lose nothing: trainer settings, a
network too large for memory, prepared data of another recipe or corpus, a params.yaml that `dvc exp run -S` left
bad, a moved artifact folder, a list argument given without brackets."""

from __future__ import annotations

import json
import shutil
import sqlite3
import typing
from pathlib import Path

import pytest
from conftest import CONF, FEW_BATCHES, clone, tiny_overrides, working_dir, write_corpus

from seqpipe import evaluate, fetch, prepare, train
from seqpipe.cli import main
from seqpipe.config import ACCELERATORS, PRECISIONS, compose, load_params, validate, write_params
from seqpipe.errors import SeqpipeError


def runs(db: Path) -> list[str]:
    """The statuses of the MLflow runs in a SQLite store ([] when the store has no tables yet)."""
    if not db.is_file():
        return []
    with sqlite3.connect(db) as c:
        try:
            return [row[0] for row in c.execute("select status from runs")]
        except sqlite3.OperationalError:
            return []


def exit_code(argv: list[str]) -> int:
    """`seqpipe ARGV`'s exit status: main's return value, or the code Hydra's job exits with."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_the_trainer_values_checked_without_lightning_are_lightnings():
    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry

    lightning = {str(v) for part in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(part)}
    assert set(PRECISIONS) == lightning
    assert set(AcceleratorRegistry.available_accelerators()) | {"gpu", "auto"} == set(ACCELERATORS)


@pytest.mark.parametrize("override,message", [
    ("trainer.precision=bogus", "trainer.precision='bogus' is not allowed; choose one of: 32-true, 16-mixed"),
    ("trainer.accelerator=npu", "trainer.accelerator='npu' is not allowed; choose one of: cpu, gpu"),
    ("trainer.devices=0", "trainer.devices=0 is not a device count"),
    ("trainer.devices=[]", "trainer.devices=[] is not a device count"),
])
def test_bad_trainer_values_are_refused_at_compose(override, message):
    with pytest.raises(SeqpipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(compose([override], config_dir=CONF))


@pytest.mark.parametrize("good", ["trainer.precision=16-mixed", "trainer.precision=32", "trainer.devices=[0,1]",
                                  "trainer.devices='0,1'", "trainer.devices=-1", "trainer.devices=auto"])
def test_lightnings_other_spellings_pass(good):
    validate(compose([good], config_dir=CONF))


@pytest.fixture
def prepared(tmp_path: Path):
    write_corpus(tmp_path / "corpus")
    with working_dir(tmp_path):
        cfg = compose(tiny_overrides(tmp_path), config_dir=CONF)
        fetch.run(cfg)
        prepare.run(cfg)
        yield tmp_path


def test_seqpipe_train_with_bad_trainer_settings_says_one_line_and_tracks_no_run(prepared, capsys, monkeypatch):
    monkeypatch.setenv("SEQPIPE_CONF_DIR", str(CONF))
    for override, said in [("trainer.precision=bogus", "trainer.precision='bogus' is not allowed"),
                           ("+trainer.strategy=bogus", "refused by Lightning: You selected an invalid strategy name"),
                           ("+trainer.no_such_argument=1", "unexpected keyword argument 'no_such_argument'")]:
        code = exit_code(["train", *tiny_overrides(prepared), override, f"hydra.run.dir={prepared / 'outputs'}"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("seqpipe: error: ") and said in err, err
        assert "Traceback" not in err and "Error executing job" not in err
    assert runs(prepared / "mlflow.db") == []


def test_a_network_too_large_for_memory_is_refused_before_it_is_built(prepared):
    cfg = compose([*tiny_overrides(prepared), "model.hidden_size=200000"], config_dir=CONF)
    with pytest.raises(SeqpipeError, match=r"network has 160,\d{3},\d{3},\d{3} parameters \(model.hidden_size=200000"
                                           r".* GiB is free on this machine; lower model.hidden_size"):
        train.run(cfg)
    assert runs(prepared / "mlflow.db") == [] and not (prepared / "models").exists()


def test_a_start_that_fails_after_the_run_is_created_ends_it_as_failed(prepared):
    (prepared / "models").write_text("not a folder")  # paths.models names a file: run.json cannot be written
    cfg = compose(tiny_overrides(prepared), config_dir=CONF)
    with pytest.raises(FileExistsError):  # from writing models/run.json, after the run was created
        train.run(cfg)
    assert runs(prepared / "mlflow.db") == ["FAILED"]


def test_prepared_data_of_another_recipe_or_corpus_is_refused(prepared, capsys, monkeypatch):
    monkeypatch.setenv("SEQPIPE_CONF_DIR", str(CONF))
    made_from = json.loads((prepared / "data/prepared/meta.json").read_text())["made_from"]
    assert made_from["recipe"] == "text_file" and len(made_from["sha256"]) == 64
    shakespeare = [o for o in tiny_overrides(prepared) if not o.startswith(("recipe=", "recipe.fetch"))]
    assert main(["train", *shakespeare, "recipe=shakespeare"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was prepared from recipe 'text_file', but the config says recipe 'shakespeare': " \
        "prepare it again with `dvc repro` (or `seqpipe stage fetch` then `seqpipe stage prepare`)" in err
    other = compose([*tiny_overrides(prepared), f"recipe.fetch.paths=[{prepared / 'other'}]"], config_dir=CONF)
    with pytest.raises(SeqpipeError, match=r"other settings of recipe 'text_file' \(recipe.fetch.paths=\["):
        train.run(other)
    assert runs(prepared / "mlflow.db") == [] and not (prepared / "models").exists()


def test_evaluate_refuses_data_prepared_since_from_another_corpus(prepared):
    cfg = compose([*tiny_overrides(prepared), *FEW_BATCHES], config_dir=CONF)
    train.run(cfg)
    write_corpus(prepared / "other", n_docs=4, seed=1)  # the data is prepared again from another corpus
    other = compose([*tiny_overrides(prepared), f"recipe.fetch.paths=[{prepared / 'other'}]"], config_dir=CONF)
    fetch.run(other)
    prepare.run(other)
    with pytest.raises(SeqpipeError, match="prepared from other settings of recipe 'text_file'.*`dvc repro`"):
        evaluate.run(cfg)
    assert not (prepared / "reports" / "metrics.json").exists()


def test_data_prepared_before_its_recipe_was_recorded_is_accepted(prepared):
    meta_file = prepared / "data/prepared/meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["made_from"]
    meta_file.write_text(json.dumps(meta))
    cfg = compose([*tiny_overrides(prepared), "model.hidden_size=200000"], config_dir=CONF)
    with pytest.raises(SeqpipeError, match="network has"):  # got past the data check, to the next one
        train.run(cfg)
    with pytest.raises(SeqpipeError, match=r"too large for torch to size \(model.hidden_size=999999999.*lower"):
        train.run(compose([*tiny_overrides(prepared), "model.hidden_size=999999999"], config_dir=CONF))


def test_a_params_yaml_left_bad_by_dvc_exp_run_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQPIPE_CONF_DIR", str(CONF))
    params = tmp_path / "params.yaml"
    write_params([], params, CONF)
    cell = load_params(params, check_fresh=False).model.cell  # the default recipe's
    params.write_text(params.read_text().replace(f"cell: {cell}", "cell: transformer"))  # what `-S model.cell=` writes
    with pytest.raises(SeqpipeError, match=r"model.cell='transformer' is not allowed; choose one of: .* \(.*"
                                           r"params.yaml differs from conf/ at model.cell: .*`seqpipe compose` "
                                           r"writes it from conf/"):
        load_params(params, check_fresh=False)
    write_params([], params, CONF)  # `seqpipe compose`: the fix
    assert load_params(params, check_fresh=False).model.cell == cell


def test_a_path_without_brackets_in_a_list_argument_is_a_list_of_one(tmp_path, capsys):
    write_corpus(tmp_path / "corpus", n_docs=2)
    with working_dir(tmp_path):
        cfg = compose([*tiny_overrides(tmp_path), "recipe.fetch.paths=corpus"], config_dir=CONF)
        assert cfg.recipe.fetch.paths == "corpus"
        stats = fetch.run(cfg)
    assert stats["documents"] == 2
    assert "recipe.fetch.paths='corpus' read as a list of one: [corpus]" in capsys.readouterr().err


def test_generate_with_the_artifact_folder_moved_names_the_folder(tiny_lm, tmp_path, capsys):
    tmp_path = clone(tiny_lm["root"], tmp_path / "project")  # the session's tiny model, registered, in a copy
    with working_dir(tmp_path):
        shutil.move(tmp_path / "mlruns", tmp_path / "elsewhere")
        capsys.readouterr()
        code = main(["generate", "--model", "models:/seqpipe-text_file@champion", "--max-new-tokens", "5",
                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"the files of models:/seqpipe-text_file@champion are missing: {tmp_path / 'mlruns'} does not exist" in err
