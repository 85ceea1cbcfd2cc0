"""Compose conf/ with Hydra, keep params.yaml in step with it, and validate values before any work starts."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from seqpipe.atomic import write_text
from seqpipe.errors import SeqpipeError
from seqpipe.tasks import NAMES, task_rules, task_sections
from seqpipe.tasks.rules import INPUT_KINDS

# nets.CELLS's names, repeated so that checking a config never loads torch (tests/test_cells.py keeps them equal);
# the _ref cells are written out gate by gate (seqpipe.models.cells) and cannot read packed sequences
REF_CELLS = ("lstm_ref", "gru_ref")
CELLS = ("rnn", "gru", "lstm", *REF_CELLS)
NONLINEARITIES = ("tanh", "relu")
SCHEDULES = ("cosine", "constant")
POOLINGS = ("last", "mean", "max")
# What the networks take (nets.build_net); a key outside this list would reach the network's constructor and fail
# there, after the data work. tests/test_config.py checks it against conf/ and the networks' signatures.
MODEL_KEYS = ("cell", "nonlinearity", "embedding_dim", "hidden_size", "num_layers", "dropout", "bidirectional",
              "pooling", "packed", "tie_weights")
# Sections whose keys code reads by name: `+section.key=...` adds a key nothing reads (a typo, or an option that
# does not exist), so it is refused. These and the tasks' own sections (Task.section: seq2seq, pianoroll, ctc).
# recipe.fetch is open: its keys are the arguments of the recipe's function.
CLOSED_SECTIONS = ("prepare", "data", "model", "optim", "train", "evaluate", "mlflow", "register", "serve", "paths",
                   "study")
# Lightning's precision and accelerator names (lightning.fabric.connector, the accelerator registry plus its
# aliases), repeated so that checking a config never loads Lightning (tests/test_inputs_guard.py keeps them equal).
# The strategy (and any other Trainer argument) is checked by building the Trainer before a run is tracked.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
PARAMS_FILE = "params.yaml"
SAVED = Path("local") / "overrides.yaml"  # under conf/: the overrides of the last `seqpipe compose`


def conf_dir() -> Path:
    """conf/ of the project in the working directory, else the one beside this package's source tree."""
    if env := os.environ.get("SEQPIPE_CONF_DIR"):
        return Path(env).resolve()
    here = Path.cwd() / "conf"
    if (here / "config.yaml").is_file():
        return here.resolve()
    return (Path(__file__).resolve().parents[2] / "conf").resolve()


def compose(overrides: list[str] | tuple[str, ...] = (), config_dir: str | Path | None = None) -> DictConfig:
    """The config conf/ gives with `overrides`, interpolations resolved (as DVC composes it)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(Path(config_dir or conf_dir()).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def check_override_keys(overrides: list[str] | tuple[str, ...], config_dir: str | Path | None = None) -> None:
    """Refuse `key=value` overrides of keys the config does not have, listing the keys that are there."""
    for override in overrides:
        key = override.split("=", 1)[0]
        if override.startswith("+") and key.lstrip("+").rpartition(".")[0] in (*CLOSED_SECTIONS, *task_sections()):
            parent = key.lstrip("+").rpartition(".")[0]
            raise SeqpipeError(f"{override!r} adds a key that seqpipe does not read; the keys under {parent!r} are: "
                               f"{', '.join(OmegaConf.select(compose((), config_dir), parent))}")
    plain = [o for o in overrides if "=" in o and not o.startswith(("+", "~", "-", "hydra."))]
    groups = [o for o in plain if "." not in o.split("=", 1)[0]]
    cfg = None
    for override in plain:
        key = override.split("=", 1)[0]
        if "." not in key:
            continue
        if cfg is None:
            cfg = compose([g for g in groups if "," not in g], config_dir)  # the groups chosen, not a sweep
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if not isinstance(node, DictConfig):
            raise SeqpipeError(f"unknown config key {key!r}: {parent!r} is not a section of the config")
        if leaf not in node:
            raise SeqpipeError(f"unknown config key {key!r}; the keys under {parent!r} are: {', '.join(node)}")


def write_params(overrides: list[str] | tuple[str, ...] = (), path: str | Path = PARAMS_FILE,
                 config_dir: str | Path | None = None) -> bool:
    """Compose conf/ into params.yaml, refusing bad values; touch the file only when its content changes. True if it
    changed."""
    cfg = compose(overrides, config_dir)
    validate(cfg)
    text = OmegaConf.to_yaml(cfg)
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text(path, text)
    return True


_COMMAND = "# seqpipe compose "


def saved_overrides(config_dir: str | Path | None = None) -> list[str]:
    """The overrides `seqpipe compose` saved in conf/local/overrides.yaml ([] when there are none)."""
    path = Path(config_dir or conf_dir()) / SAVED
    if not path.is_file():
        return []
    line = next((x for x in path.read_text(encoding="utf-8").splitlines() if x.startswith(_COMMAND)), None)
    return shlex.split(line[len(_COMMAND):]) if line else [f"(the settings in {path})"]


def save_overrides(overrides: list[str] | tuple[str, ...], config_dir: str | Path | None = None) -> None:
    """Keep `overrides` in conf/local/overrides.yaml, which conf/config.yaml composes after the recipe, so every way
    of composing (`seqpipe compose`, `seqpipe train`, `dvc exp run -S`) builds on them. They replace the overrides
    saved before; none removes the file. The composition is validated before anything is written."""
    config_dir = Path(config_dir or conf_dir())
    path = config_dir / SAVED
    if not overrides:
        path.unlink(missing_ok=True)
        return
    if bad := [o for o in overrides if o.startswith("~") or "=" not in o or o.startswith("hydra.")]:
        raise SeqpipeError(f"seqpipe compose saves key=value overrides only, not {bad[0]!r}; edit conf/ for that")
    # what they give on top of conf/ alone, without the overrides saved before
    wanted = compose([*overrides, *(["~local"] if path.is_file() else [])], config_dir)
    validate(wanted)
    defaults, values = [], OmegaConf.create()
    for override in overrides:
        key, value = override.lstrip("+").split("=", 1)
        if "." not in key and (config_dir / key).is_dir():  # a config group: recipe=text_file, trainer=gpu
            defaults.append({f"override /{key}": value})
        else:
            OmegaConf.update(values, key, OmegaConf.select(wanted, key), force_add=True)
    body = OmegaConf.to_yaml(OmegaConf.merge({"defaults": defaults} if defaults else {}, values))
    write_text(path, "# @package _global_\n# Written by `seqpipe compose`; composed after the recipe by every command "
                     "(dvc exp run -S too). `seqpipe compose --reset` removes it.\n"
                     f"{_COMMAND}{shlex.join(overrides)}\n{body}")
    if compose((), config_dir) != wanted:  # cannot happen unless Hydra changes how defaults compose
        path.unlink()
        raise SeqpipeError(f"the overrides could not be saved as a config file ({path}); edit conf/ instead")


def _diff(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: params.yaml has {b!r}, conf/ gives {a!r}"]


def check_params_fresh(path: str | Path = PARAMS_FILE, config_dir: str | Path | None = None) -> None:
    """Refuse a params.yaml that conf/ has changed under since it was composed.

    A params.yaml that differs from conf/ but is newer than every file in it was composed on purpose
    (`dvc exp run -S key=value` or `seqpipe compose key=value`) and is accepted.
    """
    path, config_dir = Path(path), Path(config_dir or conf_dir())
    if not path.is_file():
        raise SeqpipeError(f"{path} not found: run `seqpipe compose` to write it from conf/")
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    fresh = OmegaConf.to_container(compose((), config_dir))
    if params == fresh:
        return
    newest_conf = max(p.stat().st_mtime for p in config_dir.rglob("*.yaml"))
    if newest_conf > path.stat().st_mtime:
        changes = _diff(fresh, params)
        shown = "\n  ".join(changes[:10]) + ("\n  ..." if len(changes) > 10 else "")
        raise SeqpipeError(
            f"{path} is stale: conf/ changed after it was composed.\n  {shown}\n"
            "Refresh it with `seqpipe compose` (add key=value overrides to keep a variant), then run "
            "`dvc repro` again; or run a variant with `dvc exp run -S key=value`, which composes for you."
        )


def load_params(path: str | Path = PARAMS_FILE, check_fresh: bool = True) -> DictConfig:
    """The config a DVC stage runs with: params.yaml, checked against conf/ and validated."""
    if check_fresh:
        check_params_fresh(path)
    cfg = OmegaConf.load(path)
    try:
        validate(cfg)
    except SeqpipeError as e:
        raise SeqpipeError(f"{e}{_not_from_conf(path)}") from None
    return cfg


def _not_from_conf(path: str | Path) -> str:
    """For a refused params.yaml: where it differs from conf/ (what `dvc exp run -S key=value` wrote, which DVC
    leaves in place when the run fails) and how to write it from conf/ again; "" where it does not differ."""
    params = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    keys = [change.split(": params.yaml has", 1)[0] for change in _diff(OmegaConf.to_container(compose()), params)]
    if not keys:
        return ""
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return (f" ({path} differs from conf/ at {shown}: written by `dvc exp run -S` or by hand; `seqpipe compose` "
            "writes it from conf/ again, then `dvc repro`)")


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SeqpipeError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _positive(cfg: DictConfig, *keys: str) -> None:
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise SeqpipeError(f"{key}={value!r} must be a positive integer")


def _fraction(key: str, value: object, low: float, high: float) -> None:
    if not isinstance(value, int | float) or not low <= value < high:
        raise SeqpipeError(f"{key}={value!r} must be a number in [{low}, {high})")


def check_devices(cfg: DictConfig) -> None:
    """Refuse a GPU trainer where torch sees no GPU, naming the trainer to use instead. Checked when training starts
    (`seqpipe train`, the train stage), not at compose: params.yaml may be composed here for a machine with GPUs."""
    if cfg.trainer.accelerator not in ("gpu", "cuda"):
        return
    import torch  # only for GPU trainers, so a CPU run's precheck stays free of torch

    if not torch.cuda.is_available():
        ddp = str(cfg.trainer.get("strategy", "")).startswith("ddp")
        instead = "trainer=ddp_cpu (DDP over CPU processes) or trainer=cpu" if ddp else \
            "trainer=cpu (or trainer=ddp_cpu for DDP over CPU processes)"
        raise SeqpipeError(f"trainer.accelerator={cfg.trainer.accelerator} needs a CUDA GPU, and this machine has "
                           f"none: train with {instead} here; trainer=gpu and trainer=ddp are for machines with GPUs")


def check_trainer(t: DictConfig) -> None:
    """trainer.precision, .accelerator, .devices and .max_time as Lightning takes them, named in the message."""
    if t.get("precision") is not None:
        _choice("trainer.precision", str(t.precision), PRECISIONS)
    if t.get("accelerator") is not None:
        _choice("trainer.accelerator", t.accelerator, ACCELERATORS)
    if t.get("max_time") is not None and not re.fullmatch(r"\d+:\d\d:\d\d:\d\d", str(t.max_time)):
        raise SeqpipeError(f"trainer.max_time={t.max_time!r} is not a wall time: give DD:HH:MM:SS, e.g. 00:00:30:00 "
                           "for half an hour (null: no limit)")
    devices = t.get("devices", "auto")
    if isinstance(devices, ListConfig):
        ok = len(devices) > 0 and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    elif isinstance(devices, str):
        ok = re.fullmatch(r"auto|-1|\d+(,\d+)*,?", devices.strip()) is not None and devices.strip() != "0"
    else:
        ok = isinstance(devices, int) and not isinstance(devices, bool) and (devices > 0 or devices == -1)
    if not ok:
        raise SeqpipeError(f"trainer.devices={devices!r} is not a device count: give a positive number of devices, "
                           "-1 (all of them), auto, or a list of device indices such as [0,1]")


def validate(cfg: DictConfig) -> None:
    """Check the values a run depends on, with messages that name the key and the allowed values."""
    m = cfg.model
    if missing := sorted(OmegaConf.missing_keys(cfg)):  # `???` in conf/: a value the user must give
        raise SeqpipeError(f"{missing[0]} has no value: give it, e.g. `seqpipe compose {missing[0]}=...` (the recipe "
                           "says what it takes)")
    _choice("task", cfg.task, NAMES)
    _choice("prepare.inputs", cfg.prepare.inputs, INPUT_KINDS)
    if extra := sorted(set(m) - set(MODEL_KEYS)):
        raise SeqpipeError(f"model.{extra[0]} is not a model option (the network cannot take it); the options are: "
                           f"{', '.join(MODEL_KEYS)}. Remove it from the overrides or from conf/")
    _choice("model.pooling", m.pooling, POOLINGS)
    _choice("prepare.empty", cfg.prepare.empty, ("drop", "error"))
    _choice("model.cell", m.cell, CELLS)
    if m.packed and m.cell in REF_CELLS:
        raise SeqpipeError(f"model.packed=true needs one of torch's fused cells (rnn, gru, lstm): model.cell="
                           f"{m.cell} cannot read a packed sequence; set model.packed=false")
    _choice("model.nonlinearity", m.nonlinearity, NONLINEARITIES)
    _choice("optim.schedule", cfg.optim.schedule, SCHEDULES)
    _positive(cfg, "model.embedding_dim", "model.hidden_size", "model.num_layers", "data.batch_size",
              "data.bptt", "data.eval_batch_size", "trainer.max_epochs", "train.log_every_n_steps")
    _fraction("model.dropout", m.dropout, 0.0, 1.0)
    if not isinstance(cfg.train.gradient_flow, bool):
        raise SeqpipeError(f"train.gradient_flow={cfg.train.gradient_flow!r} must be true or false")
    _positive(cfg, "train.gradient_flow_every")
    check_trainer(cfg.trainer)
    if cfg.train.gradient_flow and m.bidirectional:  # the rest is checked as training starts (models.gradflow)
        raise SeqpipeError("train.gradient_flow=true measures the gradient that travels back through time from a "
                           "sequence's last step, and a bidirectional encoder's backward direction reads from that "
                           "end: set model.bidirectional=false (or train.gradient_flow=false)")
    _fraction("prepare.val_fraction", cfg.prepare.val_fraction, 0.0, 0.5)
    _fraction("prepare.test_fraction", cfg.prepare.test_fraction, 0.0, 0.5)
    if not isinstance(cfg.optim.lr, int | float) or cfg.optim.lr <= 0:
        raise SeqpipeError(f"optim.lr={cfg.optim.lr!r} must be a positive number")
    task_rules(cfg.task).check(cfg)
    if cfg.prepare.max_len is not None:
        _positive(cfg, "prepare.max_len")
    if m.tie_weights and m.embedding_dim != m.hidden_size:
        raise SeqpipeError(
            f"model.tie_weights=true needs model.embedding_dim == model.hidden_size "
            f"(got {m.embedding_dim} and {m.hidden_size}); set them equal or tie_weights=false"
        )
