"""A document: one row of data/raw/documents.jsonl, as a recipe writes it and prepare reads it. One row per document
or example:

- language modelling: {"id", "text"}
- classification (many-to-one): {"id", "text", "label", "source"}; `label` is a string from the recipe's label
  set, `source` says where the example comes from (for per-source metrics; "" when there is one source)
- tagging (many-to-many, Tx = Ty): {"id", "text", "tags"}; `tags` has one character per character of `text`
- frame sequences (prepare.inputs=frames): {"id", "frames", "label"} or {"id", "frames", "target"}; `frames` is a
  T x F nested list of numbers (one feature vector per step), `target` a number (task regress)
- sequence to sequence (Tx != Ty): {"id", "text", "output", "group"}; `output` is the target text (phonemes, an
  ISO date, a translation); rows with the same `group` (the pronunciations of one word) land in one split
- any row may carry `split` ("train" or "test"): the source's own split, which prepare keeps (val is carved from
  train)
"""

from typing import NotRequired, TypedDict


class Document(TypedDict):
    id: str
    text: NotRequired[str]
    label: NotRequired[str]
    source: NotRequired[str]
    tags: NotRequired[str]
    frames: NotRequired[list[list[float]]]
    target: NotRequired[float]
    split: NotRequired[str]
    output: NotRequired[str]
    group: NotRequired[str]
