"""Built-in data sources. Each recipe module has a `fetch(...) -> list[Document]`, named by `_target_` in
conf/recipe/<name>.yaml. The rows are `Document`s (seqpipe.data.documents, which says what each task's rows hold).
"""

from seqpipe.data.documents import Document

__all__ = ["Document"]
