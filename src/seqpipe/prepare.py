"""DVC stage `prepare`: documents -> the task's arrays (token streams split by document for a language model,
examples otherwise) and prepared/meta.json, which names the recipe and settings the data was made from."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from seqpipe.atomic import write_json
from seqpipe.data import provenance
from seqpipe.data.meta import META
from seqpipe.errors import SeqpipeError
from seqpipe.fetch import read_documents
from seqpipe.tasks import get_task


def run(cfg: DictConfig) -> dict:
    """Documents -> the task's arrays and prepared/meta.json; the figures go to reports/data.json."""
    task = get_task(cfg.task)
    docs = read_documents(cfg.paths.raw)
    raw_file = Path(cfg.paths.raw) / "documents.jsonl"
    # the documents' own fields (what recipes write), before any task reads them: one message for an empty corpus
    if all("frames" not in d and "notes" not in d for d in docs) \
            and sum(len(d.get("text", "").strip()) for d in docs) == 0:
        raise SeqpipeError(f"the corpus is empty: {raw_file} holds no text (recipe {cfg.recipe.name!r})")
    stats = task.prepare(cfg, docs, raw_file)
    provenance.record(cfg, Path(cfg.paths.prepared) / META)  # what train and evaluate check the data against
    write_json(Path(cfg.paths.reports) / "data.json", stats)
    return stats
