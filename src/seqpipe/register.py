"""DVC stage `register`: log the best model as a self-contained MLflow pyfunc and register it as a new version of
`seqpipe-<recipe>` (once per training run, with a description), point `challenger` at it, and move `champion` to
it only when its test loss beats a champion that was tested on the same data."""

from __future__ import annotations

import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

import seqpipe
from seqpipe.atomic import write_json
from seqpipe.data.inputs import kind_of
from seqpipe.errors import SeqpipeError
from seqpipe.evaluate import load_checkpoint, read_train_result
from seqpipe.serving.pyfunc import SeqpipeModel
from seqpipe.tasks import get_task
from seqpipe.tracking.runs import run_name
from seqpipe.tracking.store import connect, require_run

CHAMPION, CHALLENGER = "champion", "challenger"
LOSS = "test/loss"     # the champion criterion, every task; the same name in metrics.json, MLflow and here
LIMITS = "serve.limits"  # tag: the serving limits stored in the version (JSON)
WITHDRAWN = "seqpipe.withdrawn"  # tag a version with this (any value) to keep it out of every champion decision
CONCURRENT_S = 600     # versions registered this close to ours compete with it (see settle_champion)
# The run params that say how big a version's input side was, and in what
INPUT_SIZES = (("data.features", "features"), ("data.vocab_size", "tokens"), ("vocab_size", "tokens"))


def export_weights(checkpoint: str, out: Path, max_len: int | None, limits: dict, decode: dict | None = None) -> dict:
    """The network's weights, config, prepared/meta.json (task, inputs, labels), serving limits and default decoding
    settings (sequence to sequence), without Lightning's training state; returns the meta."""
    module = load_checkpoint(checkpoint)  # refuses a missing or corrupt file with a clear message
    hp = module.hparams
    torch.save({"meta": hp["meta"], "model": hp["net"], "state_dict": module.net.state_dict(),
                "max_len": max_len, "limits": limits, "decode": decode or {}}, out)
    return hp["meta"]


def describe(cfg: DictConfig, info: dict, metrics: dict, digest: str, run: object) -> str:
    """The version's description in the registry: what was trained, how well, on what data, from which code."""
    m, tags = cfg.model, run.data.tags  # type: ignore[attr-defined]
    tested = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("test/") and k.count("/") == 1)
    dirty = tags.get("git.dirty", "false")
    code = tags.get("mlflow.source.git.commit", "unknown") + ("" if dirty == "false" else f" + changes in {dirty}")
    return "\n".join([
        f"{run_name(cfg)}: recipe {cfg.recipe.name}, task {cfg.task}",
        f"model: {'bidirectional ' if m.bidirectional else ''}{m.cell}, {m.num_layers} x {m.hidden_size} hidden, "
        f"embedding {m.embedding_dim}, dropout {m.dropout}; {info['epochs']} epochs, {info['steps']} steps, "
        f"lr {cfg.optim.lr}",
        f"serving limits: {', '.join(f'{k} {v}' for k, v in cfg.serve.items())}",
        f"test: {tested}",
        f"data: sha256 {digest}",
        f"code: git {code}",
        f"run: {info['run_id']}",
    ])


def log_and_register(cfg: DictConfig, info: dict, name: str, tags: dict, description: str) -> ModelVersion:
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pt"
        limits = OmegaConf.to_container(cfg.serve)
        task = get_task(cfg.task)
        meta = export_weights(info["best_checkpoint"], weights, cfg.prepare.max_len, limits, task.decoding(cfg))
        artifacts = {"weights": str(weights), **kind_of(meta["inputs"]).artifacts(cfg.paths.prepared)}
        signature, example = task.signature(cfg, meta)
        with mlflow.start_run(run_id=info["run_id"]):
            model_info = mlflow.pyfunc.log_model(
                name="model", python_model=SeqpipeModel(), artifacts=artifacts,
                metadata={"task": cfg.task, "inputs": meta["inputs"]["kind"], "limits": limits},
                code_paths=[str(Path(seqpipe.__file__).parent)], signature=signature, input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                                  "pandas", "numpy", "hydra-core"],
            )
    mv = mlflow.register_model(model_info.model_uri, name, tags=tags)
    mlflow.MlflowClient().update_model_version(name, mv.version, description=description)
    return mv


def registered_from(client: mlflow.MlflowClient, name: str, run_id: str, limits: str) -> ModelVersion | None:
    """The version that already holds the model of training run `run_id` with these serving limits, if any (new
    limits make a new version: they travel inside the model)."""
    try:
        found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:
        return None
    same = [v for v in found if v.tags.get(LIMITS) == limits]
    return min(same, key=lambda v: int(v.version)) if same else None


class Standing:
    """A version's test loss and the digest of the data it was trained and tested on (from its tags, or for
    versions registered before they were tagged, from its run)."""

    def __init__(self, client: mlflow.MlflowClient):
        self.client, self._runs = client, {}

    def _run_params(self, run_id: str) -> dict:
        if run_id not in self._runs:
            try:
                self._runs[run_id] = self.client.get_run(run_id).data.params
            except MlflowException:
                self._runs[run_id] = {}
        return self._runs[run_id]

    def loss(self, v: ModelVersion) -> float:
        return float(v.tags.get(LOSS, v.tags.get("test_loss", math.inf)))

    def digest(self, v: ModelVersion) -> str:
        return v.tags.get("data.digest") or self._run_params(v.run_id).get("data.digest", "unknown")

    def inputs(self, v: ModelVersion) -> tuple[str, str]:
        """(size, what) of what the version read, from its run's params: its vocabulary in tokens, or its number of
        frame features (runs of seqpipe 0.1 logged `vocab_size`)."""
        params = self._run_params(v.run_id)
        return next(((params[key], what) for key, what in INPUT_SIZES if key in params), ("?", "tokens"))

    def compare_inputs(self, a: ModelVersion, b: ModelVersion) -> str:
        (size_a, what_a), (size_b, what_b) = self.inputs(a), self.inputs(b)
        same = {"tokens": "vocabulary {} vs {} tokens", "features": "{} vs {} features"}.get(what_a)
        return same.format(size_a, size_b) if what_a == what_b else f"{size_a} {what_a} vs {size_b} {what_b}"


def alias_version(client: mlflow.MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return None


_RACES = ("unique constraint", "integrityerror", "database is locked")  # a concurrent writer got there first


def set_alias(client: mlflow.MlflowClient, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """Point `alias` at `version`. MLflow sets an alias by read-then-insert, so two registrations setting the same
    new alias at once can collide (a unique-constraint error, or SQLite's lock): try again, then raise."""
    for attempt in range(attempts):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException as e:
            if attempt == attempts - 1 or not any(r in str(e).lower() for r in _RACES):
                raise
            time.sleep(random.uniform(0.05, 0.3))


def settle_champion(client: mlflow.MlflowClient, name: str, mine: ModelVersion, force: bool,
                    attempts: int = 10) -> dict:
    """Move `champion` to the best of: the champion, our version, and the versions registered within CONCURRENT_S of
    ours on the same data. MLflow has no compare-and-set for aliases, so set, then re-read and decide again until a
    read agrees: a concurrent registration that overwrote a better champion with a stale decision finds the better
    version on its own re-read (it was registered within the window) and puts it back."""
    s = Standing(client)
    first = alias_version(client, name, CHAMPION)
    report = {"previous_champion": None if first is None else {"version": int(first.version), LOSS: s.loss(first)}}
    if force:
        set_alias(client, name, CHAMPION, mine.version)
        return report | {"promoted": True, "verdict": "champion (register.force_champion=true)"}
    for _ in range(attempts):
        champ = alias_version(client, name, CHAMPION)
        if champ is not None and champ.version != mine.version and s.digest(champ) != s.digest(mine):
            return report | {"promoted": False, "verdict": (
                f"challenger only: champion v{champ.version} was trained and tested on other data (data digest "
                f"{s.digest(champ)[:12]} vs {s.digest(mine)[:12]}, {s.compare_inputs(champ, mine)}), so their test "
                f"losses are not comparable; to make v{mine.version} "
                "champion anyway, register again with register.force_champion=true")}
        rivals = [v for v in client.search_model_versions(f"name='{name}'")
                  if abs(v.creation_timestamp - mine.creation_timestamp) <= CONCURRENT_S * 1000
                  and WITHDRAWN not in v.tags and s.digest(v) == s.digest(mine)]
        # equal losses: the newest version wins (the same training run registered again with new serving limits)
        best = min([*rivals, *([champ] if champ is not None else [])], key=lambda v: (s.loss(v), -int(v.version)))
        if champ is not None and champ.version == best.version:
            if champ.version == mine.version:
                verdict = ("champion (first version)" if first is None else "champion (already)"
                           if first.version == mine.version else
                           f"champion (previous champion v{first.version} had {LOSS} {s.loss(first):.4f})")
            else:
                verdict = f"challenger only: champion v{champ.version} has {LOSS} {s.loss(champ):.4f}"
            return report | {"promoted": champ.version == mine.version, "verdict": verdict}
        set_alias(client, name, CHAMPION, best.version)
        time.sleep(random.uniform(0.05, 0.3))  # let a concurrent writer's alias land before re-reading
    raise SeqpipeError(f"the champion alias of {name} kept moving during {attempts} tries (many registrations at "
                       "once?); run the register stage again")


def run(cfg: DictConfig) -> dict:
    info = read_train_result(cfg)
    reports = Path(cfg.paths.reports)
    metrics_path = reports / "metrics.json"
    if not metrics_path.is_file():
        raise SeqpipeError(f"{metrics_path} not found: run the evaluate stage first (`dvc repro evaluate`)")
    metrics = json.loads(metrics_path.read_text())
    if LOSS not in metrics:
        raise SeqpipeError(f"{metrics_path} has no {LOSS!r}: it was written by an older seqpipe; run the evaluate "
                           "stage again (`dvc repro -f evaluate`)")
    test_loss = float(metrics[LOSS])
    if not math.isfinite(test_loss):
        raise SeqpipeError(f"test loss is {test_loss}: refusing to register a broken model")
    connect(cfg, must_exist=True)  # before anything is logged or written
    require_run(info["run_id"], str(reports / "train.json"))
    name = cfg.register.model_name
    client = mlflow.MlflowClient()
    run = client.get_run(info["run_id"])
    digest = run.data.params.get("data.digest", "unknown")

    # What the served model is besides its weights: its limits and, for a task that decodes, its default decoding;
    # when either changes, the same training run makes a new version.
    decode = get_task(cfg.task).decoding(cfg)
    limits = json.dumps({**OmegaConf.to_container(cfg.serve), **({"decode": decode} if decode else {})},
                        sort_keys=True)
    mv = registered_from(client, name, info["run_id"], limits)
    new = mv is None
    if new:
        tags = {LOSS: str(test_loss), "run_id": info["run_id"], "data.digest": digest, "task": cfg.task,
                "recipe": cfg.recipe.name, LIMITS: limits}
        mv = log_and_register(cfg, info, name, tags, describe(cfg, info, metrics, digest, run))
    else:
        print(f"register: training run {info['run_id']} is already registered as {name} v{mv.version} (same "
              "serving limits and decoding); no new version added", file=sys.stderr)
    set_alias(client, name, CHALLENGER, mv.version)
    gate = settle_champion(client, name, mv, bool(cfg.register.force_champion))
    champion = alias_version(client, name, CHAMPION)
    result = {"model_name": name, "version": int(mv.version), LOSS: test_loss, "new_version": new,
              "champion_version": int(champion.version) if champion else None, **gate}
    write_json(reports / "registry.json", result)
    print(f"register: {name} v{mv.version} ({LOSS} {test_loss:.4f}) -> {gate['verdict']}", file=sys.stderr)
    return result
