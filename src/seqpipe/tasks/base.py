"""What every task provides, with the defaults: its config rules (`check`), `prepare` (documents -> arrays +
prepared/meta.json), its data module, `build_net`, `step` (one batch -> loss, weight, predictions), the metrics it
tracks, `evaluate` (test metrics and plots), and for the served model its signature and `predict`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from seqpipe.errors import SeqpipeError

if TYPE_CHECKING:
    import pandas as pd
    from lightning.pytorch import LightningDataModule
    from omegaconf import DictConfig
    from torch import Tensor, nn
    from torchmetrics import Metric

    from seqpipe.recipes import Document


@dataclass
class Step:
    """What one batch gives the trainer: the mean loss over `weight` counted targets, predictions and targets for
    the task's metrics, and the hidden state to carry to the next chunk (language models)."""
    loss: Tensor
    weight: int
    preds: Tensor | None = None
    target: Tensor | None = None
    state: object = None


class Task:
    name = ""
    inputs: tuple[str, ...] = ("tokens", "frames")  # the prepare.inputs it can read
    column = "text"        # the served model's input column (frames models: "frames")
    carries_state = False  # consecutive batches continue the same streams (stateful truncated BPTT)
    generates = False      # `seqpipe generate` (text out) rather than `seqpipe predict`
    reads_prefix = True    # an input longer than prepare.max_len is read as its first max_len steps when served
    refuses_long = False   # an input longer than prepare.max_len is refused (prepare drops such pairs, counted)
    aligned = False        # a list target has one value per input step (tagging)
    decodes = False        # the served model decodes outputs with evaluate's beam settings as its defaults

    def check(self, cfg: DictConfig) -> None:
        """Config rules of this task, with messages that name the key and the fix."""
        if cfg.prepare.inputs not in self.inputs:
            raise SeqpipeError(f"prepare.inputs={cfg.prepare.inputs} does not work with task={self.name}, which reads "
                               f"{' or '.join(self.inputs)}; set prepare.inputs={self.inputs[0]}")
        if cfg.train.carry_state and not self.carries_state:
            raise SeqpipeError(f"train.carry_state=true carries hidden state across chunks of one stream (task=lm); "
                               f"task={self.name} has independent sequences: set train.carry_state=false")

    def prepare(self, cfg: DictConfig, docs: list[Document], raw_file: Path) -> dict:
        from seqpipe.data.prepare_examples import prepare_examples

        return prepare_examples(cfg, self, docs, raw_file)

    # --- the target side of prepare (labelled tasks) ---------------------------------------------------------------
    key = "label"      # the document field holding the target
    stratify = True    # split so that each label keeps its share in every split
    dedupe = True      # prepare.dedupe applies: an input seen twice would be in train and test

    def target_meta(self, cfg: DictConfig, docs: list[Document]) -> dict:
        """What serving needs to know about targets (labels, a size), from the configured or found labels."""
        from collections import Counter

        from seqpipe.data.prepare_examples import label_set

        return {"labels": label_set(cfg, Counter(d[self.key] for d in docs))}  # type: ignore[literal-required]

    def encode_target(self, doc: Document, target: dict) -> object:
        """One document's target as numbers: a class index, a list of them (one per step) or a float."""
        return target["labels"].index(doc[self.key])  # type: ignore[literal-required]

    def fit_targets(self, cfg: DictConfig, splits: dict[str, list[dict]], target: dict) -> dict | None:
        """After the split: what the targets need from the train split (a target vocabulary), into `target`, and
        each row's `target` encoded with it; returns figures for prepare's report."""
        return None

    def net_config(self, cfg: DictConfig) -> dict:
        """What build_net takes (kept in checkpoints and registered models): the model section."""
        return dict(cfg.model)

    def callbacks(self, cfg: DictConfig) -> list:
        """Lightning callbacks this task trains with (e.g. a teacher-forcing schedule)."""
        return []

    def datamodule(self, cfg: DictConfig, meta: dict) -> LightningDataModule:
        from seqpipe.data.examples import ExampleDataModule

        d = cfg.data
        return ExampleDataModule(cfg.paths.prepared, d.batch_size, d.eval_batch_size, d.bucketing, d.num_workers,
                                 cfg.seed, d.bucket_factor)

    def build_net(self, meta: dict, model: dict) -> nn.Module:
        raise NotImplementedError

    def step(self, net: nn.Module, batch: dict[str, Tensor], state: object) -> Step:
        raise NotImplementedError

    def final_step_only(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch with its loss counted at each sequence's last step only (seqpipe.models.gradflow: the gradient that
        reaches step t then travelled back from the end). A many-to-one task's loss already is."""
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

    def signature(self, cfg: DictConfig, meta: dict) -> tuple[object, pd.DataFrame]:
        """The served model's MLflow signature and input example."""
        raise NotImplementedError

    def predict(self, model: object, model_input: object, params: dict | None) -> pd.DataFrame:
        """The served model's answer for a request (model: the loaded SeqpipeModel)."""
        raise NotImplementedError


def test_scores(cfg: DictConfig, module: object, dm: LightningDataModule) -> dict:
    """The module's test-split figures (test/loss and the task's metrics), from a bare one-device Trainer."""
    import lightning.pytorch as L

    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=cfg.trainer.enable_progress_bar)
    (scores,) = trainer.test(module, datamodule=dm, verbose=False)
    return scores
