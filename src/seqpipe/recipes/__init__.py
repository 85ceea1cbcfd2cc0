"""Built-in data sources. Each recipe module has a `fetch(...) -> list[Document]`, named by `_target_` in
conf/recipe/<name>.yaml. One row per document or example:

- language modelling: {"id", "text"}
- classification (many-to-one): {"id", "text", "label", "source"}; `label` is a string from the recipe's label
  set, `source` says where the example comes from (for per-source metrics; "" when there is one source)
- tagging (many-to-many, Tx = Ty): {"id", "text", "tags"}; `tags` has one character per character of `text`
"""

from typing import NotRequired, TypedDict


class Document(TypedDict):
    id: str
    text: str
    label: NotRequired[str]
    source: NotRequired[str]
    tags: NotRequired[str]
