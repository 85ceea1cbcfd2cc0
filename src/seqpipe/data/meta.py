"""prepared/meta.json: what prepare made (task, input kind, target), read back by train, evaluate and the served
model (every registered model holds a copy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from seqpipe.data.inputs import kind_of
from seqpipe.errors import SeqpipeError

if TYPE_CHECKING:
    from omegaconf import DictConfig

META = "meta.json"  # prepared/meta.json: task, inputs, target; also inside every registered model


def read_meta(prepared_dir: str | Path) -> dict:
    """prepared/meta.json, refused with the fix when prepare has not run (or ran with an older seqpipe)."""
    path = Path(prepared_dir) / META
    if not path.is_file():
        raise SeqpipeError(f"{path} not found: run the prepare stage first (`dvc repro prepare`)")
    meta = json.loads(path.read_text())
    meta["inputs"] = kind_of(meta["inputs"]).reread(prepared_dir)
    return meta


def prepared_meta(cfg: DictConfig) -> dict:
    """prepared/meta.json, refused when it was prepared for another task or input kind than the config's."""
    meta = read_meta(cfg.paths.prepared)
    have, want = (meta.get("task"), meta["inputs"]["kind"]), (cfg.task, cfg.prepare.inputs)
    if have != want:
        raise SeqpipeError(f"{cfg.paths.prepared} was prepared for task={have[0]}, prepare.inputs={have[1]}, but the "
                           f"config says task={want[0]}, prepare.inputs={want[1]}: run the prepare stage again "
                           "(`dvc repro prepare`)")
    return meta
