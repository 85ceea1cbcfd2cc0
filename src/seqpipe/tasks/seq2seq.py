"""Sequence to sequence (Tx != Ty): an encoder-decoder with attention (seqpipe.models.attention) reads a token sequence
and writes another of its own length: spelling -> pronunciation (g2p), a written date -> ISO 8601, English -> Spanish.
Teacher-forced cross-entropy while training (with an optional scheduled teacher-forcing ratio); at test the
outputs are decoded (beam search, or greedy) and scored against every reference of their input: exact match, token
error rate (edit distance; the phoneme error rate in g2p), sequence error rate (the word error rate in g2p) and
BLEU. The served model maps strings to strings, with beam width, n-best and sampling options."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.nn.utils.rnn import pad_sequence
from torchmetrics.classification import MulticlassAccuracy

from seqpipe.data.documents import Document
from seqpipe.data.text_tokens import load_tokenizer
from seqpipe.data.vocab import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID, UNK_ID, Vocab
from seqpipe.errors import SeqpipeError
from seqpipe.models.attention import Seq2Seq
from seqpipe.tasks.base import ExampleTask, Step, evaluated_decoding
from seqpipe.tasks.rules import Seq2SeqRules
from seqpipe.tasks.seq2seq_eval import DECODE_PARAMS, evaluate_seq2seq, serve


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Sources padded with <pad>; the decoder's input <bos> y_1 .. y_n padded with <pad>; its targets y_1 .. y_n
    <eos> padded with IGNORE_INDEX, which the loss skips."""
    xs = [x.long() for x, _ in batch]
    ys = [y.long() for _, y in batch]
    bos, eos = torch.tensor([BOS_ID]), torch.tensor([EOS_ID])
    return {"x": pad_sequence(xs, batch_first=True, padding_value=PAD_ID),                   # (B, S)
            "lengths": torch.tensor([len(x) for x in xs], dtype=torch.long),                  # (B,)
            "y_in": pad_sequence([torch.cat([bos, y]) for y in ys], batch_first=True, padding_value=PAD_ID),
            "y": pad_sequence([torch.cat([y, eos]) for y in ys], batch_first=True, padding_value=IGNORE_INDEX)}


class TeacherForcing(L.Callback):
    """Sets the probability that a decoder step is fed the true previous token: `start` throughout, or moving
    linearly from `start` to `end` over the training steps (scheduled sampling)."""

    def __init__(self, start: float, end: float | None):
        self.start, self.end = start, end

    def ratio(self, progress: float) -> float:
        return self.start if self.end is None else self.start + (self.end - self.start) * min(1.0, progress)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object,
                             batch_idx: int) -> None:
        progress = trainer.global_step / max(1, int(trainer.estimated_stepping_batches))
        pl_module.net.teacher_forcing = self.ratio(progress)  # type: ignore[union-attr]


class Seq2SeqTask(Seq2SeqRules, ExampleTask):
    # name, inputs, carries_state, section, trained_by, check(cfg): its config rules (seqpipe.tasks.rules)
    key = "output"
    stratify = False
    dedupe = False       # an input may have several outputs (pronunciations): all are kept, in one split (group)
    params = DECODE_PARAMS

    # --- prepare: the output side ------------------------------------------------------------------------------
    def target_tokenizer(self, cfg: DictConfig) -> dict:
        t = cfg.prepare.target_tokenizer
        return dict(t if t is not None else cfg.prepare.tokenizer)

    def target_meta(self, cfg: DictConfig, docs: list[Document]) -> dict:
        self._tokenizer = instantiate(self.target_tokenizer(cfg))
        return {"tokenizer": self.target_tokenizer(cfg)}

    def encode_target(self, doc: Document, target: dict) -> list[str]:
        output = doc["output"]
        if not isinstance(output, str):
            raise SeqpipeError(f"example {doc['id']!r}: output {output!r} is not a string; fix the data")
        return self._tokenizer.tokenize(output)

    def fit_targets(self, cfg: DictConfig, splits: dict[str, list[dict]], target: dict) -> dict:
        """The output vocabulary from the train split (its tokens go into meta.json, so a registered model carries
        them), and every row's output as ids."""
        p = cfg.prepare
        vocab = Vocab.build(Counter(t for r in splits["train"] for t in r["target"]), p.min_freq, p.max_size,
                            tokenizer=target["tokenizer"])
        target |= {"tokens": vocab.itos, "longest": max(len(r["target"]) for r in splits["train"])}
        stats = {"target_vocab_size": len(vocab)}
        for name, rows in splits.items():
            ids = [vocab.encode(r["target"]) for r in rows]
            for r, encoded in zip(rows, ids):
                r["target"] = encoded
            total = sum(map(len, ids))
            stats[f"{name}_target_unk_rate"] = round(sum(i.count(UNK_ID) for i in ids) / max(total, 1), 6)
        print(f"prepare: output vocabulary {len(vocab)} tokens, longest train output {target['longest']}",
              file=sys.stderr)
        return stats

    # --- training ----------------------------------------------------------------------------------------------
    def net_config(self, cfg: DictConfig) -> dict:
        model = {k: v for k, v in cfg.model.items() if k not in ("pooling", "tie_weights")}
        return {**model, "attention": cfg.seq2seq.attention, "input_feeding": cfg.seq2seq.input_feeding}

    def callbacks(self, cfg: DictConfig) -> list:
        s = cfg.seq2seq
        return [TeacherForcing(float(s.teacher_forcing), None if s.teacher_forcing_end is None
                               else float(s.teacher_forcing_end))]

    def collate(self, cfg: DictConfig) -> tuple[object, object]:
        return collate, None

    def build_net(self, meta: dict, model: dict):  # noqa: ANN201
        return Seq2Seq(meta["inputs"], len(meta["target"]["tokens"]), **model)

    def step(self, net, batch, state) -> Step:  # noqa: ANN001
        logits, _ = net(batch["x"], batch["lengths"], batch["y_in"])  # (B, T, V)
        logits, y = logits.reshape(-1, logits.size(-1)), batch["y"].reshape(-1)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        return Step(loss, int((y != IGNORE_INDEX).sum()), logits.detach(), y)

    def metrics(self, meta: dict) -> dict:
        # next-token accuracy with the true previous tokens given (teacher forced), <eos> included
        return {"token_acc": MulticlassAccuracy(len(meta["target"]["tokens"]), average="micro",
                                                ignore_index=IGNORE_INDEX)}

    # --- test and serving ----------------------------------------------------------------------------------------
    def evaluate(self, cfg: DictConfig, module, dm, out_dir: Path) -> dict:  # noqa: ANN001
        return evaluate_seq2seq(cfg, module, dm, out_dir)

    def decoding(self, cfg: DictConfig) -> dict:
        return evaluated_decoding(cfg)

    def output_example(self, meta: dict) -> dict:
        return {"output": ["x"], "score": [-0.5], "complete": [True], "unk_fraction": [0.0],
                "n_best": ['[["x", -0.5]]']}

    def load_served(self, meta: dict) -> dict:
        """The output vocabulary and its tokenizer (meta.json's target: a registered model carries them)."""
        target = meta["target"]
        return {"target_vocab": Vocab(target["tokens"], target["tokenizer"]),
                "target_tokenizer": load_tokenizer(target["tokenizer"])}

    def predict(self, model, model_input, params) -> list[dict]:  # noqa: ANN001
        return serve(model, model_input, params)
