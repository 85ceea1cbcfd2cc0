"""A served classifier's, tagger's or regressor's own part of answering, kept lean (torch and the network, no
Lightning, pandas or MLflow) so that `seqpipe predict --text` can load the model and answer without them
(seqpipe.serving.local); the MLflow pyfunc's `predict` (seqpipe.tasks.classify, seqpipe.tasks.regress) answers with
the same rows: the network from the saved weights, and each input's answer as a row of columns."""

from __future__ import annotations

import torch

from seqpipe.models.nets import SequenceClassifier, SequenceTagger

COMMAND = "predict"  # the command that answers with these models (`seqpipe predict`)


def build_net(meta: dict, model: dict) -> SequenceClassifier | SequenceTagger:
    """The network of a registered model (prepared/meta.json names its task)."""
    return task_net(meta["task"], meta, model)


def task_net(task: str, meta: dict, model: dict) -> SequenceClassifier | SequenceTagger:
    """The network the saved `model` config describes for `task`: one output per label (per step when tagging), or
    one value (regress)."""
    model = {k: v for k, v in model.items() if k != "tie_weights"}
    inputs = meta["inputs"]  # text: the vocabulary's size builds the embedding without the input kinds' module
    inputs = inputs["vocab_size"] if inputs["kind"] == "tokens" else inputs  # (seqpipe.models.nets.input_layer)
    if task == "tag":
        model = {k: v for k, v in model.items() if k != "pooling"}
        return SequenceTagger(inputs, len(meta["target"]["labels"]), **model)
    return SequenceClassifier(inputs, 1 if task == "regress" else len(meta["target"]["labels"]), **model)


def label_answer(probs: torch.Tensor, labels: list[str]) -> dict:
    """A sequence's label and every class's probability."""
    return {"label": labels[int(probs.argmax())], **{f"prob_{c}": float(probs[k]) for k, c in enumerate(labels)}}


def tags_answer(probs: torch.Tensor, labels: list[str]) -> dict:
    """One tag per position (joined by spaces unless every tag is one character) and the mean confidence."""
    tags = [labels[k] for k in probs.argmax(-1).tolist()]
    sep = "" if all(len(t) == 1 for t in labels) else " "
    return {"tags": sep.join(tags), "confidence": float(probs.max(-1).values.mean())}


def answer_rows(model: object, task: str, xs: list[torch.Tensor], unk: list[float] | None) -> list[dict]:
    """Each input's answer, its columns in the served model's order: the label (or tags, or prediction), the share of
    unknown tokens for text, then the class probabilities (or the confidence). `model` is the loaded model
    (seqpipe.serving.served.Served: rows shares the network's calls with concurrent requests while serving)."""
    outputs = model.rows(task, model.forward_rows, xs)  # type: ignore[attr-defined]
    if task == "regress":
        return [{"prediction": float(y[0])} for y in outputs]
    rows = []
    for i, (x, logits) in enumerate(zip(xs, outputs)):
        probs = torch.softmax(logits.float(), -1)  # (C,) or (T, C)
        answer = tags_answer(probs[:len(x)], model.labels) if task == "tag" else \
            label_answer(probs, model.labels)  # type: ignore[attr-defined]
        first = next(iter(answer))  # the label or tags, then how much of the input was unknown
        rows.append({first: answer.pop(first), **({"unk_fraction": unk[i]} if unk else {}), **answer})
    return rows
