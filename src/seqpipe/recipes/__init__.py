"""Built-in data sources. Each recipe module has a `fetch(...) -> list[Document]` named by `_target_` in conf/recipe."""

from typing import TypedDict


class Document(TypedDict):
    id: str
    text: str
