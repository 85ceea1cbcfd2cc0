"""Load a registered model (`models:/name@alias` or `models:/name/version`): generate text from a language model;
label, tag or score rows (texts, or frame sequences) with any other model. A training checkpoint of this checkout's
pipeline loads too (`models/`, or a .ckpt file), as the model `register` would log from it: a clone that pulled
models/ and data/ from a DVC remote answers without the MLflow store."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from tqdm import tqdm

from seqpipe.atomic import atomic_path
from seqpipe.data.requests import InputError
from seqpipe.errors import SeqpipeError
from seqpipe.serving.local import warn_environment
from seqpipe.tasks import get_task
from seqpipe.tracking.store import check_model_files, check_store, shown_uri, use_tracking_uri
from seqpipe.tracking.uris import MODEL_URI

BEST = Path("checkpoints") / "best.ckpt"  # what the train stage writes under paths.models


def describe_registry(client: object, name: str) -> str:
    """What the registry holds under `name`: its versions and aliases, for error messages."""
    model = client.get_registered_model(name)  # type: ignore[attr-defined]
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))  # type: ignore
    aliases = ", ".join(f"@{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
    return f"versions: {', '.join(map(str, versions)) or 'none'}; aliases: {aliases}"


def check_model_uri(uri: str) -> None:
    """Raise a message listing what exists when `uri` names a model, version or alias that does not; a local path
    must be a model directory."""
    if uri.startswith("models:/") and not MODEL_URI.match(uri):
        name = uri.removeprefix("models:/").strip("/")
        raise SeqpipeError(f"model URI {uri!r} names no version: use models:/{name}@champion (an alias) or "
                           f"models:/{name}/1 (a version number)")
    if "://" not in uri and ":/" not in uri:
        path = Path(uri)
        if not path.exists():
            raise SeqpipeError(f"no model at {uri}: give models:/NAME@ALIAS, models:/NAME/VERSION, the path of a "
                               "model directory or a training checkpoint (models/)")
        if not (path / "MLmodel").is_file():
            raise SeqpipeError(f"{uri} is not an MLflow model (it has no MLmodel file): give the directory that "
                               "holds MLmodel, or models:/NAME@ALIAS")
        return
    m = MODEL_URI.match(uri)
    if not m:
        return  # runs:/ and other schemes: MLflow reports on them
    client = mlflow.MlflowClient()
    name = m["name"]
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(r.name for r in client.search_registered_models())
        raise SeqpipeError(f"no registered model named {name!r} in {shown_uri(mlflow.get_tracking_uri())}; "
                           f"registered models: {', '.join(names) or 'none'}") from None
    try:
        if m["alias"]:
            client.get_model_version_by_alias(name, m["alias"])
        else:
            client.get_model_version(name, m["version"])
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        what = f"alias @{m['alias']}" if m["alias"] else f"version {m['version']}"
        raise SeqpipeError(f"model {name!r} has no {what}; {describe_registry(client, name)}") from None


def checkpoint_path(model_uri: str) -> Path | None:
    """The training checkpoint `model_uri` names: a .ckpt file, or a models/ folder (its checkpoints/best.ckpt);
    None for anything else (an MLflow model directory, a models:/ or runs:/ URI)."""
    path = Path(model_uri)
    if path.suffix == ".ckpt" and ":/" not in model_uri:
        return path
    if path.is_dir() and not (path / "MLmodel").exists() and (path / BEST).exists():
        return path / BEST
    return None


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Without MLflow's advice on logging a model (pickling, input examples) and its copy progress bars: saving a
    model only to load it, `seqpipe generate` would print them as if the user had logged one."""
    logger, bar = logging.getLogger("mlflow"), os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    level, os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = logger.level, "false"
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def load_checkpoint_model(checkpoint: Path, params_file: str | Path = "params.yaml") -> object:
    """The pyfunc that `register` would log from `checkpoint`, built without MLflow's store: the weights, the
    prepared data's vocabulary and params.yaml's serving limits and decoding (the pipeline's own files, as a DVC
    pull brings them); refused when the prepared data is not the data the checkpoint was trained on."""
    from omegaconf import OmegaConf

    from seqpipe.config import load_params
    from seqpipe.data.inputs import kind_of
    from seqpipe.data.meta import prepared_meta
    from seqpipe.register import export_weights
    from seqpipe.serving.pyfunc import SeqpipeModel

    if not Path(params_file).is_file():
        raise SeqpipeError(f"{checkpoint} is a training checkpoint, read with the pipeline's {params_file}, which is "
                           "not here: run `seqpipe generate` in the checkout the model was trained in")
    cfg = load_params(params_file, check_fresh=False)  # what the pipeline ran with (dvc.lock), edits of conf/ aside
    meta, task = prepared_meta(cfg), get_task(cfg.task)
    limits = OmegaConf.to_container(cfg.serve)
    with tempfile.TemporaryDirectory(prefix="seqpipe-ckpt-") as tmp:
        weights = Path(tmp) / "model.pt"
        trained = export_weights(str(checkpoint), weights, cfg.prepare.max_len, limits, task.decoding(cfg))
        if trained["inputs"] != meta["inputs"]:
            raise SeqpipeError(f"checkpoint {checkpoint} was trained on other data than {cfg.paths.prepared} holds "
                               f"({trained['inputs']} vs {meta['inputs']}): `dvc pull` (or `dvc repro`) so that "
                               "both come from the same run")
        saved = Path(tmp) / "model"
        with _quiet_mlflow():
            mlflow.pyfunc.save_model(
                saved, python_model=SeqpipeModel(), signature=task.signature(cfg, meta)[0],
                artifacts={"weights": str(weights), **kind_of(meta["inputs"]).artifacts(cfg.paths.prepared)},
                metadata={"task": cfg.task, "inputs": meta["inputs"]["kind"], "limits": limits},
                pip_requirements=[])  # never served from here: no requirements to infer (that would load it twice)
            model = mlflow.pyfunc.load_model(str(saved))  # everything is read into memory here
    model.unwrap_python_model().model = f"checkpoint {checkpoint}"  # what answers name instead of a version
    return model


def load_model(model_uri: str, tracking_uri: str, command: str | None) -> object:
    """The registered pyfunc (or a training checkpoint's: `load_checkpoint_model`), refused with a clear message
    when `command` (predict, generate) is not the one its task answers with. The store is checked first (within
    seconds), so a server that is down never looks like a missing model."""
    if (checkpoint := checkpoint_path(model_uri)) is not None:
        model = load_checkpoint_model(checkpoint)
    else:
        if "://" in model_uri or model_uri.startswith(("models:/", "runs:/")):
            try:
                check_store(tracking_uri, must_exist=True)
            except SeqpipeError as e:  # e.g. a clone that pulled models/ from a DVC remote: no store, a checkpoint
                if (Path("models") / BEST).is_file():
                    raise SeqpipeError(f"{e}; or answer with this checkout's training checkpoint: --model models/") \
                        from None
                raise
        use_tracking_uri(tracking_uri)
        check_model_uri(model_uri)
        check_model_files(model_uri)  # a moved mlruns/ folder is named, not an MLflow traceback
        # MLflow's own check of the model's requirements scans every installed distribution's files (~1.5 s of each
        # command on 2 cores): check_environment reads the model's pins instead
        model = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)
        check_environment(model)
    task = get_task((model.metadata.metadata or {}).get("task", "lm"))
    # the one question the CLI asks a task: which command answers with its model (None: any, for seqpipe export)
    if command is not None and task.command != command:
        raise SeqpipeError(f"{model_uri} is a {task.name!r} model, which `seqpipe {task.command}` answers with: use "
                           f"`seqpipe {task.command}`")
    return model


def check_environment(model: object) -> None:
    """One warning line when the model was registered in another environment than this one, as MLflow's load_model
    warns (without its cost)."""
    folder = getattr(model.unwrap_python_model(), "folder", None)  # type: ignore[attr-defined]
    if folder is not None:
        flavor = (model.metadata.flavors or {}).get("python_function", {})  # type: ignore[attr-defined]
        warn_environment(Path(folder), flavor.get("python_version"))


def generate(model_uri: str, prompts: list[str], tracking_uri: str, **params: object) -> list[str]:
    model = load_model(model_uri, tracking_uri, "generate")
    return model.predict(pd.DataFrame({"prompt": prompts}), params=params)["text"].tolist()


def batches(texts: list, limits: dict, batch_size: int) -> list[tuple[int, int]]:
    """Row ranges [start, end) of at most `batch_size` rows whose characters (at least their tokens), or frames, fit
    in one request of a model with these limits."""
    out, start, size = [], 0, 0
    for i, text in enumerate(texts):
        if i > start and (i - start >= min(batch_size, limits["max_rows"]) or
                          size + len(text) > limits["max_total_tokens"]):
            out.append((start, i))
            start, size = i, 0
        size += len(text)
    return [*out, (start, len(texts))] if texts else out


def predict_file(model: object, input_path: Path, output_path: Path, column: str, batch_size: int = 256,
                 params: dict | None = None) -> int:
    """Predictions for every row of `input_path` (CSV, TSV, JSONL, or .txt: one input per line; for a model that
    reads audio, also a folder of clips or a list of them), written beside its columns to `output_path` (atomically;
    tab-separated when it ends in .tsv). The model's input kind reads the file and builds each request."""
    served = model.unwrap_python_model()  # type: ignore[attr-defined]
    kind, limits = served.kind, served.limits
    frame = kind.table(input_path, column)
    values = kind.values(frame, column)
    parts = []
    ranges = batches(values, limits, kind.rows_per_request(column, batch_size))
    for start, end in tqdm(ranges, desc="predict", unit="batch", disable=len(ranges) <= 1):
        request = kind.request(values[start:end], column, limits)
        try:
            parts.append(model.predict(request, params=params))  # type: ignore[attr-defined]
        except InputError as e:
            where = f"data row {start + e.row + 1}" if e.row is not None else f"data rows {start + 1}-{end}"
            raise SeqpipeError(f"{input_path}, {where}: {e.reason}") from None
    result = pd.concat([frame.reset_index(drop=True), pd.concat(parts, ignore_index=True)], axis=1)
    with atomic_path(output_path) as tmp:
        result.to_csv(tmp, index=False, sep="\t" if output_path.suffix == ".tsv" else ",")
    return len(result)
