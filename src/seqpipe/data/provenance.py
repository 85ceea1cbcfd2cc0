"""What prepared data was made from: the recipe's name and a digest of its settings (the `recipe` section, what
fetch reads), written into prepared/meta.json by prepare and checked by train and evaluate, so that data fetched for
another recipe or corpus is never trained on, or scored, under this config's name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seqpipe.atomic import write_json
from seqpipe.errors import SeqpipeError

KEY = "made_from"  # in prepared/meta.json


def made_from(cfg: DictConfig) -> dict:
    """{"recipe": name, "sha256": digest of the recipe section, "recipe_config": the section}."""
    section = OmegaConf.to_container(cfg.recipe, resolve=True)
    text = json.dumps(section, sort_keys=True, ensure_ascii=False, default=str)
    return {"recipe": cfg.recipe.name, "sha256": hashlib.sha256(text.encode()).hexdigest(), "recipe_config": section}


def record(cfg: DictConfig, meta_file: str | Path) -> None:
    """Add what the data was made from to the meta.json that prepare just wrote."""
    path = Path(meta_file)
    write_json(path, {**json.loads(path.read_text()), KEY: made_from(cfg)})


def _changes(have: object, want: object, prefix: str = "recipe") -> list[str]:
    if isinstance(have, dict) and isinstance(want, dict):
        return [c for k in sorted(set(have) | set(want), key=str)
                for c in _changes(have.get(k, "<missing>"), want.get(k, "<missing>"), f"{prefix}.{k}")]
    return [] if have == want else [f"{prefix}={have!r} there, {want!r} here"]


def check(cfg: DictConfig, meta: dict) -> None:
    """Refuse prepared data made from another recipe, or from other recipe settings (another corpus), than the
    config's. Data prepared before seqpipe recorded this names nothing and is accepted."""
    have = meta.get(KEY)
    if not have:
        return
    want = made_from(cfg)
    if have["sha256"] == want["sha256"]:
        return
    if have["recipe"] != want["recipe"]:
        what = f"recipe {have['recipe']!r}, but the config says recipe {want['recipe']!r}"
    else:
        changes = _changes(have.get("recipe_config"), want["recipe_config"])
        what = f"other settings of recipe {want['recipe']!r} ({'; '.join(changes[:3]) or 'its digest differs'})"
    raise SeqpipeError(f"{cfg.paths.prepared} was prepared from {what}: prepare it again with `dvc repro` (or "
                       "`seqpipe stage fetch` then `seqpipe stage prepare`) for this config")
