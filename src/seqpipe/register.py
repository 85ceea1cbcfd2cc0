"""DVC stage `register`: log the best model as a self-contained MLflow pyfunc, register a new version as
`challenger`, and move `champion` to it only when its test loss beats the current champion's."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.models import infer_signature
from omegaconf import DictConfig

import seqpipe
from seqpipe.atomic import write_json
from seqpipe.errors import SeqpipeError
from seqpipe.evaluate import load_checkpoint, read_train_result
from seqpipe.pyfunc import PARAMS, SeqpipeModel
from seqpipe.tracking import tracking_uri, use_tracking_uri

CHAMPION, CHALLENGER = "champion", "challenger"


def export_weights(checkpoint: str, prepared: Path, out: Path, max_len: int | None = None) -> str:
    """The network's weights, config and labels alone, without Lightning's training state; returns the task."""
    module = load_checkpoint(checkpoint)  # refuses a missing or corrupt file with a clear message
    hp, state = module.hparams, module.net.state_dict()
    task = hp.get("task", "lm")
    labels = json.loads((prepared / "labels.json").read_text())["labels"] if task != "lm" else []
    torch.save({"task": task, "labels": labels, "vocab_size": hp["vocab_size"], "model": hp["net"],
                "state_dict": state, "max_len": max_len}, out)
    return task


def signature_for(task: str, example_text: str) -> tuple[object, pd.DataFrame]:
    if task == "lm":
        example = pd.DataFrame({"prompt": [example_text]})
        return infer_signature(example, ["generated text"], params=PARAMS), example
    example = pd.DataFrame({"text": [example_text]})
    output = pd.DataFrame({"label": ["x"], "unk_fraction": [0.0]}) if task == "classify" else \
        pd.DataFrame({"tags": ["x"], "unk_fraction": [0.0], "confidence": [1.0]})
    return infer_signature(example, output), example


def champion_loss(client: mlflow.MlflowClient, name: str) -> tuple[str | None, float]:
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None, math.inf
    return mv.version, float(mv.tags.get("test_loss", math.inf))


def run(cfg: DictConfig) -> dict:
    info = read_train_result(cfg)
    metrics_path = Path(cfg.paths.reports) / "metrics.json"
    if not metrics_path.is_file():
        raise SeqpipeError(f"{metrics_path} not found: run the evaluate stage first (`dvc repro evaluate`)")
    test_loss = float(json.loads(metrics_path.read_text())["test_loss"])  # the champion criterion, every task
    if not math.isfinite(test_loss):
        raise SeqpipeError(f"test loss is {test_loss}: refusing to register a broken model")
    name = cfg.register.model_name
    use_tracking_uri(tracking_uri(cfg))
    client = mlflow.MlflowClient()

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pt"
        task = export_weights(info["best_checkpoint"], Path(cfg.paths.prepared), weights, cfg.prepare.max_len)
        vocab = Path(cfg.paths.prepared) / "vocab.json"
        signature, example = signature_for(task, cfg.evaluate.prompt)
        with mlflow.start_run(run_id=info["run_id"]):
            model_info = mlflow.pyfunc.log_model(
                name="model", python_model=SeqpipeModel(), artifacts={"weights": str(weights), "vocab": str(vocab)},
                metadata={"task": task},
                code_paths=[str(Path(seqpipe.__file__).parent)], signature=signature, input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                                  "pandas", "numpy", "hydra-core"],
            )
    mv = mlflow.register_model(model_info.model_uri, name, tags={"test_loss": str(test_loss),
                                                                  "run_id": info["run_id"]})
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    old_version, old_loss = champion_loss(client, name)
    promoted = test_loss < old_loss
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    result = {"model_name": name, "version": int(mv.version), "test_loss": test_loss, "promoted": promoted,
              "champion_version": int(mv.version) if promoted else int(old_version),
              "previous_champion_test_loss": None if math.isinf(old_loss) else old_loss}
    write_json(Path(cfg.paths.reports) / "registry.json", result)
    verdict = (f"champion (previous best {old_loss:.4f})" if promoted and old_version else "champion (first version)"
               if promoted else f"challenger only: champion v{old_version} has test loss {old_loss:.4f}")
    print(f"register: {name} v{mv.version} (test loss {test_loss:.4f}) -> {verdict}", file=sys.stderr)
    return result
