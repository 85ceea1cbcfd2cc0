"""Load a registered model (`models:/name@alias` or `models:/name/version`): generate text from a language model,
label or tag texts with a classifier or tagger."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from seqpipe.errors import SeqpipeError

if TYPE_CHECKING:
    import pandas as pd

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def describe_registry(client: object, name: str) -> str:
    """What the registry holds under `name`: its versions and aliases, for error messages."""
    model = client.get_registered_model(name)  # type: ignore[attr-defined]
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))  # type: ignore
    aliases = ", ".join(f"@{a} -> v{v}" for a, v in sorted(model.aliases.items())) or "none"
    return f"versions: {', '.join(map(str, versions)) or 'none'}; aliases: {aliases}"


def check_model_uri(uri: str) -> None:
    """Raise a message listing what exists when `uri` names a model, version or alias that does not."""
    import mlflow
    from mlflow.exceptions import MlflowException

    m = _URI.match(uri)
    if not m:
        return  # runs:/ or a local path: let MLflow report on it
    client = mlflow.MlflowClient()
    name = m["name"]
    try:
        client.get_registered_model(name)
    except MlflowException:
        names = sorted(r.name for r in client.search_registered_models())
        raise SeqpipeError(f"no registered model named {name!r} in {mlflow.get_tracking_uri()}; "
                           f"registered models: {', '.join(names) or 'none'}") from None
    try:
        if m["alias"]:
            client.get_model_version_by_alias(name, m["alias"])
        else:
            client.get_model_version(name, m["version"])
    except MlflowException:
        what = f"alias @{m['alias']}" if m["alias"] else f"version {m['version']}"
        raise SeqpipeError(f"model {name!r} has no {what}; {describe_registry(client, name)}") from None


def load_model(model_uri: str, tracking_uri: str, expect: tuple[str, ...]) -> object:
    """The registered pyfunc, refused with a clear message when it was trained for another task."""
    import mlflow

    from seqpipe.tracking import use_tracking_uri

    use_tracking_uri(tracking_uri)
    check_model_uri(model_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    task = (model.metadata.metadata or {}).get("task", "lm")
    if task not in expect:
        use = "seqpipe generate" if task == "lm" else "seqpipe predict"
        raise SeqpipeError(f"{model_uri} is a {task!r} model, not {' or '.join(map(repr, expect))}: use `{use}`")
    return model


def generate(model_uri: str, prompts: list[str], tracking_uri: str, **params: object) -> list[str]:
    import pandas as pd

    model = load_model(model_uri, tracking_uri, ("lm",))
    return model.predict(pd.DataFrame({"prompt": prompts}), params=params)


def read_table(path: Path, column: str) -> pd.DataFrame:
    """A CSV/TSV/JSONL file with a text column; errors name the file and what to change."""
    import pandas as pd

    if not path.is_file():
        raise SeqpipeError(f"input file not found: {path}")
    try:
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except UnicodeDecodeError as e:
        raise SeqpipeError(f"{path}: not valid UTF-8 at byte offset {e.start}; convert the file to UTF-8") from None
    except ValueError as e:
        raise SeqpipeError(f"{path}: cannot be read as a table: {e}") from None
    if column not in frame.columns:
        raise SeqpipeError(f"{path} has no column {column!r}; its columns: {', '.join(map(str, frame.columns))} "
                           "(choose one with --column)")
    return frame


def predict_file(model: object, input_path: Path, output_path: Path, column: str, batch_size: int = 256) -> int:
    """Predictions for every row of `input_path`, written beside its columns to `output_path` (atomically)."""
    import pandas as pd
    from tqdm import tqdm

    from seqpipe.atomic import atomic_path

    frame = read_table(input_path, column)
    texts = frame[column].astype(str).tolist()
    parts = []
    for start in tqdm(range(0, len(texts), batch_size), desc="predict", unit="batch", disable=len(texts) <= batch_size):
        parts.append(model.predict(pd.DataFrame({"text": texts[start:start + batch_size]})))  # type: ignore
    result = pd.concat([frame.reset_index(drop=True), pd.concat(parts, ignore_index=True)], axis=1)
    with atomic_path(output_path) as tmp:
        result.to_csv(tmp, index=False)
    return len(result)
