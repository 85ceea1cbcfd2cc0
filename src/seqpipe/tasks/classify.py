"""Classification: one label per sequence (many-to-one), and tagging: one label per step (many-to-many, Tx = Ty).
Cross-entropy, accuracy and macro-F1 while training; per-class F1, a confusion matrix and per-source scores at test;
the served model answers with a label and class probabilities (or one tag per position)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from seqpipe.data.documents import Document
from seqpipe.data.inputs import kind_of
from seqpipe.data.prepare_examples import label_set
from seqpipe.data.vocab import IGNORE_INDEX
from seqpipe.errors import SeqpipeError
from seqpipe.tasks import classify_served
from seqpipe.tasks.base import ExampleTask, Step
from seqpipe.tasks.classify_eval import evaluate_labels
from seqpipe.tasks.rules import ClassifyRules, TagRules


class Classify(ClassifyRules, ExampleTask):
    # name, inputs, carries_state, section, trained_by, check(cfg): its config rules (seqpipe.tasks.rules)

    def build_net(self, meta: dict, model: dict):  # noqa: ANN201
        return classify_served.task_net(self.name, meta, model)

    def step(self, net, batch, state) -> Step:  # noqa: ANN001
        logits, _ = net(batch["x"], batch["lengths"])  # (B, C), or (B, T, C) when tagging
        logits, y = logits.reshape(-1, logits.size(-1)), batch["y"].reshape(-1)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        return Step(loss, int((y != IGNORE_INDEX).sum()), logits.detach(), y)

    def metrics(self, meta: dict) -> dict:
        n = len(meta["target"]["labels"])  # accuracy and macro-F1 over every counted target (sequence or step)
        return {"acc": MulticlassAccuracy(n, average="micro", ignore_index=IGNORE_INDEX),
                "f1": MulticlassF1Score(n, average="macro", ignore_index=IGNORE_INDEX)}

    def evaluate(self, cfg: DictConfig, module, dm, out_dir: Path) -> dict:  # noqa: ANN001
        return evaluate_labels(module, dm, out_dir)

    def output_example(self, meta: dict) -> dict:
        return {**self.answer_example(), **kind_of(meta["inputs"]).output_columns()}

    def answer_example(self) -> dict:
        return {"label": ["x"]}

    def predict(self, model, model_input, params) -> list[dict]:  # noqa: ANN001
        return classify_served.answer_rows(model, self.name, *model.encode(model_input, self.name))


class Tag(TagRules, Classify):
    key = "tags"
    stratify = False
    dedupe = False

    def target_meta(self, cfg: DictConfig, docs: list[Document]) -> dict:
        return {"labels": label_set(cfg, Counter(tag for d in docs for tag in d["tags"])), "per_step": True}

    def encode_target(self, doc: Document, target: dict) -> list[int]:
        index = {label: i for i, label in enumerate(target["labels"])}
        return [index[t] for t in doc["tags"]]

    def fit_example(self, doc: Document, x: list | object, target: object, max_len: int | None) -> tuple | None:
        if len(target) != len(x):  # type: ignore[arg-type]
            raise SeqpipeError(f"example {doc['id']!r}: {len(x)} tokens but {len(target)} tags; tagging needs one tag "  # type: ignore[arg-type]
                               "per character (prepare.tokenizer = CharTokenizer)")
        return super().fit_example(doc, x, target, max_len)

    def final_step_only(self, batch: dict) -> dict:
        rows, last = torch.arange(len(batch["lengths"])), batch["lengths"] - 1
        y = torch.full_like(batch["y"], IGNORE_INDEX)
        y[rows, last] = batch["y"][rows, last]
        return {**batch, "y": y}

    def answer_example(self) -> dict:
        return {"tags": ["x"], "confidence": [1.0]}
