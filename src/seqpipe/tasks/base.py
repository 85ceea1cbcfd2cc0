"""What every task provides, with the defaults: its config rules (`check`) and config section, `prepare` (documents ->
arrays + prepared/meta.json), its data module, `build_net`, `step` (one batch -> loss, weight, predictions), the
metrics it tracks, `evaluate` (test metrics and plots), and for the served model its signature, what it loads
(`load_served`) and `predict`. `ExampleTask` adds what the tasks on
independent labelled examples share (classify, tag, regress, seq2seq, ctc): prepare by seqpipe.data.prepare_examples,
the target side, the example data module.

Capabilities are members the stages call, not flags they interpret: `command` names the CLI command that answers
with the model and `run_cli` is what `seqpipe generate` runs; `params` are the served params (their names are what
`seqpipe predict --beam-width` checks); `decoding(cfg)` the decoding a model serves by default; `long_inputs` (a
rule) the one policy for inputs longer than the training data's (seqpipe.data.request_checks.fit_length)."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import lightning.pytorch as L
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from seqpipe.data.batching import warped_collate
from seqpipe.data.documents import Document
from seqpipe.data.examples import ExampleDataModule
from seqpipe.data.inputs import kind_of
from seqpipe.data.prepare_examples import label_set, prepare_examples
from seqpipe.data.requests import WHO
from seqpipe.errors import SeqpipeError
from seqpipe.tasks.rules import TaskRules

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule
    from torch import Tensor, nn
    from torchmetrics import Metric



@dataclass
class Step:
    """What one batch gives the trainer: the mean loss over `weight` counted targets, predictions and targets for
    the task's metrics, and the hidden state to carry to the next chunk (language models)."""
    loss: Tensor
    weight: int
    preds: Tensor | None = None
    target: Tensor | None = None
    state: object = None


class Task(TaskRules):
    # name, inputs, carries_state, section, trained_by and check(cfg): the task's config rules (seqpipe.tasks.rules)
    column = "text"        # the served model's input column when it reads text (frames and audio name their own)
    command = "predict"    # the CLI command that answers with this model: `seqpipe predict` (rows in, rows out)
    params: dict = {}      # the served params, with their defaults (the signature's; `seqpipe predict` checks names)
    # long_inputs: what the served model and prepare do with an input longer than prepare.max_len (a rule)

    def prepare(self, cfg: DictConfig, docs: list[Document], raw_file: Path) -> dict:
        """Documents -> prepared/ (arrays, meta.json, splits.json), atomically; returns figures for the report."""
        raise NotImplementedError

    def net_config(self, cfg: DictConfig) -> dict:
        """What build_net takes (kept in checkpoints and registered models): the model section."""
        return dict(cfg.model)

    def callbacks(self, cfg: DictConfig) -> list:
        """Lightning callbacks this task trains with (e.g. a teacher-forcing schedule)."""
        return []

    def datamodule(self, cfg: DictConfig, meta: dict) -> LightningDataModule:
        raise NotImplementedError

    def build_net(self, meta: dict, model: dict) -> nn.Module:
        raise NotImplementedError

    def step(self, net: nn.Module, batch: dict[str, Tensor], state: object) -> Step:
        raise NotImplementedError

    def final_step_only(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch with its loss counted at each sequence's last step only (seqpipe.models.gradflow: the gradient
        that reaches step t then travelled back from the end). A many-to-one task's loss already is."""
        return batch

    def metrics(self, meta: dict) -> dict[str, Metric]:
        """Epoch metrics besides the loss, updated with each step's (preds, target)."""
        return {}

    def loss_metrics(self, stage: str, loss: float) -> dict[str, float]:
        """Figures that follow from an epoch's mean loss (bits per character, perplexity)."""
        return {}

    def evaluate(self, cfg: DictConfig, module: object, dm: LightningDataModule, out_dir: Path) -> dict:
        """Test metrics (must contain test/loss); plots and samples go to out_dir."""
        raise NotImplementedError

    # --- the served model --------------------------------------------------------------------------------------
    def decoding(self, cfg: DictConfig) -> dict:
        """The decoding settings the served model uses by default (what evaluate scored it with); {} when the task
        does not decode."""
        return {}

    def output_example(self, meta: dict) -> dict:
        """One answer's columns (besides WHO), for the signature."""
        raise NotImplementedError

    def signature(self, cfg: DictConfig, meta: dict) -> tuple[object, pd.DataFrame]:
        """The served model's MLflow signature and input example: the input kind's example and schema, this task's
        answer and params."""
        kind = kind_of(meta["inputs"])
        example = kind.example(cfg, kind.column(self.column))
        output = pd.DataFrame({**self.output_example(meta), **WHO})
        return kind.signature(example, output, self.params or None), example

    def load_served(self, meta: dict) -> dict:
        """What the served model keeps for this task besides the network and the input side (a target vocabulary),
        loaded once from the model's meta; `predict` finds it in `model.state`."""
        return {}

    def predict(self, model: object, model_input: object, params: dict | None) -> list[dict]:
        """The served model's answer for a request, one row (column -> value) per input row (model: the loaded
        SeqpipeModel, which adds the columns naming the model and makes the table)."""
        raise NotImplementedError

    def run_cli(self, args: argparse.Namespace, model: object) -> None:
        """What `self.command` does on the command line besides what every model does (`seqpipe generate`)."""
        raise SeqpipeError(f"a {self.name!r} model answers rows: use `seqpipe {self.command}`")


class ExampleTask(Task):
    """A task on independent examples, each an input sequence and a target: prepared by
    seqpipe.data.prepare_examples (read, dedupe, split, fit the input kind and the targets)."""
    key = "label"      # the document field holding the target
    stratify = True    # split so that each label keeps its share in every split
    dedupe = True      # prepare.dedupe applies: an input seen twice would be in train and test

    def prepare(self, cfg: DictConfig, docs: list[Document], raw_file: Path) -> dict:
        return prepare_examples(cfg, self, docs, raw_file)

    def target_meta(self, cfg: DictConfig, docs: list[Document]) -> dict:
        """What serving needs to know about targets (labels, a size), from the configured or found labels."""
        return {"labels": label_set(cfg, Counter(d[self.key] for d in docs))}  # type: ignore[literal-required]

    def encode_target(self, doc: Document, target: dict) -> object:
        """One document's target as numbers: a class index, a list of them (one per step) or a float."""
        return target["labels"].index(doc[self.key])  # type: ignore[literal-required]

    def fit_example(self, doc: Document, x: list | object, target: object, max_len: int | None) -> tuple | None:
        """An example's (input, target) as training reads it: cut to max_len (both sides when the target has one
        value per step), or None to drop it when the task refuses long inputs (a cut pair would be wrong)."""
        if not max_len or len(x) <= max_len and (not isinstance(target, list) or len(target) <= max_len):  # type: ignore
            return x, target
        if self.long_inputs == "refuse":
            return None
        return x[:max_len], target[:max_len] if isinstance(target, list) else target  # type: ignore[index]

    def fit_targets(self, cfg: DictConfig, splits: dict[str, list[dict]], target: dict) -> dict | None:
        """After the split: what the targets need from the train split (a target vocabulary), into `target`, and
        each row's `target` encoded with it; returns figures for prepare's report."""
        return None

    def collate(self, cfg: DictConfig) -> tuple[object, object]:
        """(collate, train-split collate) for the data module; None: pad inputs and targets. Under data.augment
        (frames, one target per sequence: checked with the config) the train split's frames are warped first."""
        augment = {key: float(value) for key, value in cfg.data.augment.items()}
        if not any(augment.values()):
            return None, None
        return None, partial(warped_collate, rng=np.random.default_rng(cfg.seed), **augment)

    def datamodule(self, cfg: DictConfig, meta: dict) -> LightningDataModule:
        d = cfg.data
        collate, train_collate = self.collate(cfg)
        return ExampleDataModule(cfg.paths.prepared, d.batch_size, d.eval_batch_size, d.bucketing, d.num_workers,
                                 cfg.seed, d.bucket_factor, collate=collate, train_collate=train_collate)


def evaluated_decoding(cfg: DictConfig) -> dict:
    """The decoding evaluate scored a model with (beam width, length penalty, output limit): what a decoding task's
    served model uses by default."""
    return {k: cfg.evaluate.get(k) for k in ("beam_width", "length_penalty", "max_output_len")}


def test_scores(cfg: DictConfig, module: object, dm: LightningDataModule) -> dict:
    """The module's test-split figures (test/loss and the task's metrics), from a bare one-device Trainer."""
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=cfg.trainer.enable_progress_bar)
    (scores,) = trainer.test(module, datamodule=dm, verbose=False)
    return scores
