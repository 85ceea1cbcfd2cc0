import os
import time

import pytest
from conftest import CONF, ROOT
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from seqpipe.config import check_override_keys, check_params_fresh, compose, validate, write_params
from seqpipe.errors import SeqpipeError


def test_defaults_compose():
    cfg = compose(config_dir=CONF)
    assert cfg.recipe.name == "shakespeare"
    assert cfg.register.model_name == "seqpipe-shakespeare"  # interpolations resolved, as DVC does
    assert cfg.trainer.accelerator == "cpu"
    validate(cfg)


@pytest.mark.parametrize("trainer,accelerator", [("gpu", "gpu"), ("ddp", "gpu")])
def test_trainer_group(trainer, accelerator):
    cfg = compose([f"trainer={trainer}"], config_dir=CONF)
    assert cfg.trainer.accelerator == accelerator
    assert cfg.trainer.max_epochs == compose(config_dir=CONF).trainer.max_epochs  # inherits cpu.yaml
    if trainer == "ddp":
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.use_distributed_sampler is False


@pytest.mark.parametrize("override,message", [
    ("model.cell=transformer", "model.cell='transformer' is not allowed; choose one of: rnn, gru, lstm"),
    ("model.nonlinearity=sigmoid", "choose one of: tanh, relu"),
    ("model.hidden_size=0", "model.hidden_size=0 must be a positive integer"),
    ("model.dropout=1.5", "model.dropout=1.5 must be a number in [0.0, 1.0)"),
    ("model.tie_weights=true", "needs model.embedding_dim == model.hidden_size"),
    ("optim.lr=-1", "optim.lr=-1 must be a positive number"),
    ("data.bptt=abc", "data.bptt='abc' must be a positive integer"),
    ("data.augment.speed=1.5", "data.augment.speed=1.5 must be a number in [0, 1)"),
    ("trainer.max_time=30min", "trainer.max_time='30min' is not a wall time: give DD:HH:MM:SS"),
    ("data.augment.scale=0.1", "data.augment.scale=0.1 changes frames at random, but task=lm does not warp its inputs"),
])
def test_bad_values_name_the_key_and_the_allowed_values(override, message):
    with pytest.raises(SeqpipeError) as e:
        validate(compose([override], config_dir=CONF))
    assert message in str(e.value)


def test_augment_is_refused_where_it_would_change_tokens_or_per_step_tags():
    with pytest.raises(SeqpipeError, match=r"data.augment.speed=0.2 changes frames at random, but prepare.inputs="
                                           r"tokens is not frames: set data.augment.speed=0"):
        validate(compose(["recipe=sentiment", "data.augment.speed=0.2"], config_dir=CONF))
    with pytest.raises(SeqpipeError, match="task=tag does not warp its inputs"):
        validate(compose(["recipe=dna", "data.augment.scale=0.1"], config_dir=CONF))
    validate(compose(["recipe=activity", "data.augment.speed=0.2", "data.augment.scale=0.1"], config_dir=CONF))


def test_unknown_key_and_unknown_recipe_are_refused():
    with pytest.raises(ConfigCompositionException, match="model.hiden_size"):
        compose(["model.hiden_size=3"], config_dir=CONF)
    with pytest.raises(ConfigCompositionException, match="shakespeare"):  # lists the recipes there are
        compose(["recipe=nope"], config_dir=CONF)


def test_unknown_override_key_lists_the_keys_there_are():
    with pytest.raises(SeqpipeError, match=r"unknown config key 'model.hiden_size'; the keys under 'model' are: "
                                           r"cell, nonlinearity, embedding_dim, hidden_size"):
        check_override_keys(["model.hiden_size=3"], CONF)
    with pytest.raises(SeqpipeError, match="'modle' is not a section"):
        check_override_keys(["modle.cell=gru"], CONF)
    check_override_keys(["recipe=text_file", "recipe.fetch.paths=[x]", "model.cell=rnn,gru", "+extra=1"], CONF)


def test_stale_params_are_refused_and_deliberate_variants_accepted(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    for path in CONF.rglob("*.yaml"):
        (conf / path.relative_to(CONF)).parent.mkdir(parents=True, exist_ok=True)
        (conf / path.relative_to(CONF)).write_text(path.read_text())
    params = tmp_path / "params.yaml"
    assert write_params(path=params, config_dir=conf)
    assert not write_params(path=params, config_dir=conf)  # unchanged: file left alone
    check_params_fresh(params, conf)

    # A variant composed on purpose (as `dvc exp run -S` does) is newer than conf/: accepted.
    write_params(["model.cell=gru"], path=params, config_dir=conf)
    check_params_fresh(params, conf)

    # conf/ edited afterwards: refused, with the key that differs and how to refresh.
    later = time.time() + 5
    cfg_file = conf / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("hidden_size: 256", "hidden_size: 300"))
    os.utime(cfg_file, (later, later))
    with pytest.raises(SeqpipeError) as e:
        check_params_fresh(params, conf)
    assert "model.hidden_size" in str(e.value) and "seqpipe compose" in str(e.value)
    write_params(path=params, config_dir=conf)
    os.utime(params, (later + 1, later + 1))
    check_params_fresh(params, conf)
    assert OmegaConf.load(params).model.hidden_size == 300


def test_model_keys_are_what_conf_gives_and_what_the_networks_take():
    import inspect

    from seqpipe.config import MODEL_KEYS
    from seqpipe.models.nets import Encoder, RecurrentLM, SequenceClassifier

    model = compose(config_dir=CONF).model
    assert set(model) == set(MODEL_KEYS)
    taken = {p for cls in (Encoder, RecurrentLM, SequenceClassifier) for p in inspect.signature(cls).parameters}
    assert set(MODEL_KEYS) <= taken


def test_an_added_key_is_refused_before_it_reaches_the_network():
    with pytest.raises(SeqpipeError, match="'\\+model.extra=1' adds a key that seqpipe does not read; the keys under "
                                           "'model' are: cell, "):
        check_override_keys(["+model.extra=1"], CONF)
    # the same config composed another way (dvc exp run -S +model.extra=1): the stages' validation refuses it
    with pytest.raises(SeqpipeError, match="model.extra is not a model option"):
        validate(compose(["+model.extra=1"], config_dir=CONF))


def test_a_tasks_own_section_is_closed_because_the_task_says_it_owns_it():
    """seq2seq, pianoroll and ctc name their sections (Task.section); a key added there is a typo nothing reads."""
    from seqpipe.tasks import task_sections

    assert set(task_sections()) == {"seq2seq", "pianoroll", "ctc"}
    with pytest.raises(SeqpipeError, match="'\\+ctc.stak=2' adds a key that seqpipe does not read; the keys under "
                                           "'ctc' are: .*stack"):
        check_override_keys(["+ctc.stak=2"], CONF)


def test_store_bounds_in_conf_match_the_command_line_defaults():
    """`seqpipe generate/predict` take no config: they check the store with check_store's defaults, which must be
    conf/'s mlflow.timeout_s and mlflow.retries."""
    import inspect

    from seqpipe.tracking.store import check_store

    defaults = inspect.signature(check_store).parameters
    cfg = compose(config_dir=CONF)
    assert (defaults["timeout_s"].default, defaults["retries"].default) == (cfg.mlflow.timeout_s, cfg.mlflow.retries)


def _conf_copy(tmp_path):
    import shutil

    shutil.copytree(CONF, tmp_path / "conf")
    return tmp_path / "conf"


def test_saved_overrides_are_composed_by_every_path(tmp_path):
    from seqpipe.config import SAVED, save_overrides, saved_overrides

    conf = _conf_copy(tmp_path)
    wanted = ["recipe=text_file", "recipe.fetch.paths=[corpus]", "model.hidden_size=99", "trainer=gpu", "seed=3"]
    save_overrides(wanted, conf)
    assert saved_overrides(conf) == wanted
    cfg = compose(config_dir=conf)  # what `seqpipe compose` and DVC's composition give with no overrides
    assert (cfg.recipe.name, list(cfg.recipe.fetch.paths), cfg.model.hidden_size, cfg.trainer.accelerator,
            cfg.seed, cfg.register.model_name) == ("text_file", ["corpus"], 99, "gpu", 3, "seqpipe-text_file")
    variant = compose(["model.cell=gru", "model.hidden_size=7"], config_dir=conf)  # `dvc exp run -S ...`
    assert (variant.recipe.name, variant.model.cell, variant.model.hidden_size) == ("text_file", "gru", 7)
    save_overrides(["model.num_layers=2"], conf)  # replaces what was saved
    assert compose(config_dir=conf).recipe.name == "shakespeare" and compose(config_dir=conf).model.num_layers == 2
    save_overrides([], conf)
    assert not (conf / SAVED).exists() and compose(config_dir=conf) == compose(config_dir=CONF)


def test_saving_a_bad_override_writes_nothing(tmp_path):
    from seqpipe.config import SAVED, save_overrides

    conf = _conf_copy(tmp_path)
    with pytest.raises(SeqpipeError, match="model.cell='transformer' is not allowed"):
        save_overrides(["model.cell=transformer"], conf)
    with pytest.raises(SeqpipeError, match="saves key=value overrides only"):
        save_overrides(["~model.packed"], conf)
    assert not (conf / SAVED).exists()


def test_compose_command_saves_and_resets(tmp_path, monkeypatch, capsys):
    from seqpipe import cli

    conf = _conf_copy(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQPIPE_CONF_DIR", str(conf))
    assert cli.main(["compose", "recipe=text_file", "model.hidden_size=48"]) == 0
    assert "your overrides, saved in" in capsys.readouterr().err
    assert OmegaConf.load("params.yaml").model.hidden_size == 48
    assert cli.main(["compose"]) == 0  # `make run` composes again: the saved overrides stay
    assert OmegaConf.load("params.yaml").model.hidden_size == 48 and "recipe=text_file" in capsys.readouterr().err
    assert cli.main(["compose", "--reset"]) == 0
    assert OmegaConf.load("params.yaml").recipe.name == "shakespeare"


def test_every_recipe_gives_the_params_the_pipeline_declares():
    """dvc.yaml names params by key; a recipe without one of them fails `dvc repro` at that stage (found with
    recipe=pairs: recipe.labels)."""
    import yaml
    from omegaconf import OmegaConf

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]  # CONF may be a copy (conftest)
    keys = {k for s in stages.values() for p in s.get("params", []) for k in ([p] if isinstance(p, str) else p)}
    for recipe in sorted(p.stem for p in (CONF / "recipe").glob("*.yaml")):
        overrides = [f"recipe={recipe}", *(["recipe.fetch.train=x.ts"] if recipe == "ts_file" else [])]
        cfg = compose(overrides, config_dir=CONF)
        missing = [k for k in sorted(keys) if OmegaConf.select(cfg, k, default="<missing>") == "<missing>"]
        assert not missing, f"recipe {recipe} lacks {missing}"
