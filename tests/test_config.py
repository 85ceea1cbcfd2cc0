import os
import time

import pytest
from conftest import ROOT
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from seqpipe.config import check_override_keys, check_params_fresh, compose, validate, write_params
from seqpipe.errors import SeqpipeError

CONF = ROOT / "conf"


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
])
def test_bad_values_name_the_key_and_the_allowed_values(override, message):
    with pytest.raises(SeqpipeError) as e:
        validate(compose([override], config_dir=CONF))
    assert message in str(e.value)


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
