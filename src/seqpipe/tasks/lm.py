"""Language modelling: documents as one token stream per split, read in (B, bptt) chunks with the hidden state
carried from chunk to chunk; next-token cross-entropy, bits per character and perplexity; text generation."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from seqpipe.atomic import atomic_path, write_json, write_text
from seqpipe.data.documents import Document
from seqpipe.data.meta import META
from seqpipe.data.request_checks import PARAMS, generation_params
from seqpipe.data.requests import texts_from
from seqpipe.data.splits import SPLITS, split_documents
from seqpipe.data.streams import StreamDataModule, encode_splits
from seqpipe.data.text_tokens import load_tokenizer
from seqpipe.data.vocab import IGNORE_INDEX, UNK_ID
from seqpipe.errors import SeqpipeError
from seqpipe.models.sampling import complete
from seqpipe.tasks import lm_served
from seqpipe.tasks.base import Step, Task, test_scores
from seqpipe.tasks.rules import LanguageModellingRules


class LanguageModelling(LanguageModellingRules, Task):
    # name, inputs, carries_state, section, trained_by, check(cfg): its config rules (seqpipe.tasks.rules)
    column = "prompt"
    command = "generate"
    params = PARAMS

    def prepare(self, cfg: DictConfig, docs: list[Document], raw_file: Path) -> dict:
        p = cfg.prepare
        if missing := [d["id"] for d in docs if "text" not in d]:
            raise SeqpipeError(f"{raw_file}: {len(missing)} rows have no text (first: {missing[0]}); a language model "
                               "reads text: use a text recipe")
        splits = split_documents(docs, p.val_fraction, p.test_fraction, p.split_seed)
        vocab, streams = encode_splits(splits, instantiate(p.tokenizer), p)
        stats: dict = {"vocab_size": len(vocab)}
        with atomic_path(Path(cfg.paths.prepared), is_dir=True) as out:
            for name in SPLITS:
                ids = streams[name]
                if ids.size <= 2 * len(splits[name]):  # nothing but <bos>/<eos>
                    raise SeqpipeError(f"the {name} split is empty ({raw_file}): add text or documents")
                np.save(out / f"{name}.npy", ids)
                stats[f"{name}_tokens"] = int(ids.size)
                stats[f"{name}_documents"] = len(splits[name])
                stats[f"{name}_unk_rate"] = round(float((ids == UNK_ID).mean()), 6)
            vocab.save(out / "vocab.json")
            write_json(out / META, {"task": self.name, "inputs": {"kind": "tokens", "vocab_size": len(vocab)},
                                    "target": {}})
            write_json(out / "splits.json", {name: [d["id"] for d in splits[name]] for name in SPLITS})
        print(f"prepare: vocab {len(vocab)}, tokens train/val/test "
              f"{stats['train_tokens']:,}/{stats['val_tokens']:,}/{stats['test_tokens']:,}", file=sys.stderr)
        return stats

    def datamodule(self, cfg: DictConfig, meta: dict):  # noqa: ANN201
        d = cfg.data
        return StreamDataModule(cfg.paths.prepared, d.batch_size, d.bptt, d.eval_batch_size, d.num_workers)

    def build_net(self, meta: dict, model: dict):  # noqa: ANN201
        return lm_served.build_net(meta, model)

    def step(self, net, batch, state) -> Step:  # noqa: ANN001
        x, y = batch["x"], batch["y"]                       # (B, T) tokens, (B, T) next tokens
        logits, state = net(x, batch.get("lengths"), state)  # (B, T, V)
        y = y.reshape(-1)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y, ignore_index=IGNORE_INDEX)
        return Step(loss, int((y != IGNORE_INDEX).sum()), state=state)

    def final_step_only(self, batch: dict) -> dict:
        y = batch["y"].clone()  # (B, T): a chunk's streams all end at its last column
        y[:, :-1] = IGNORE_INDEX
        return {**batch, "y": y}

    def loss_metrics(self, stage: str, loss: float) -> dict[str, float]:
        # bits per token (per character at character level) and perplexity
        return {f"{stage}/bpc": loss / math.log(2), f"{stage}/ppl": math.exp(min(loss, 50))}

    def evaluate(self, cfg: DictConfig, module, dm, out_dir: Path) -> dict:  # noqa: ANN001
        """Test loss in nats, bits and perplexity per token (per character at character level), and a sample."""
        scores = test_scores(cfg, module, dm)
        loss = float(scores["test/loss"])
        e, vocab = cfg.evaluate, dm.vocab
        sample = complete(module.net.cpu(), vocab, load_tokenizer(vocab.tokenizer), e.prompt, e.sample_tokens,
                          e.temperature, e.top_k, seed=cfg.seed)
        write_text(out_dir / "sample.txt", sample + "\n")
        print(f"--- sample ---\n{sample}\n---")
        return {"test/loss": loss, **self.loss_metrics("test", loss)}

    def output_example(self, meta: dict) -> dict:
        return {"text": ["generated text"]}

    def predict(self, model, model_input, params) -> list[dict]:  # noqa: ANN001
        texts = texts_from(model_input, self.column)
        p = generation_params(params, model.limits)
        model.check_size(model.tokenize(texts), p["max_new_tokens"] * p["beam_width"])
        rows = []
        for t, (continuation, logprobs) in zip(texts, model.continuations(texts, p)):
            rows.append({"text": t + continuation})
            if p["logprobs"]:  # [[token, log-probability], ...] and their sum
                rows[-1] |= {"logprob": sum(lp for _, lp in logprobs), "token_logprobs": json.dumps(
                    [[piece, round(lp, 5)] for piece, lp in logprobs], ensure_ascii=False)}
        return rows

    def run_cli(self, args: argparse.Namespace, model: object) -> None:
        lm_served.run_cli(args, model)
