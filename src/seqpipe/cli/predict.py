"""Load a registered model (`models:/name@alias` or `models:/name/version`): generate text from a language model;
label, tag or score rows (texts, or frame sequences) with any other model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from seqpipe.errors import SeqpipeError
from seqpipe.tracking.store import shown_uri

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
    """Raise a message listing what exists when `uri` names a model, version or alias that does not; a local path
    must be a model directory."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if uri.startswith("models:/") and not _URI.match(uri):
        name = uri.removeprefix("models:/").strip("/")
        raise SeqpipeError(f"model URI {uri!r} names no version: use models:/{name}@champion (an alias) or "
                           f"models:/{name}/1 (a version number)")
    if "://" not in uri and ":/" not in uri:
        path = Path(uri)
        if not path.exists():
            raise SeqpipeError(f"no model at {uri}: give models:/NAME@ALIAS, models:/NAME/VERSION or the path of a "
                               "model directory")
        if not (path / "MLmodel").is_file():
            raise SeqpipeError(f"{uri} is not an MLflow model (it has no MLmodel file): give the directory that "
                               "holds MLmodel, or models:/NAME@ALIAS")
        return
    m = _URI.match(uri)
    if not m:
        return  # runs:/ and other schemes: MLflow reports on them
    client = mlflow.MlflowClient()
    name = m["name"]
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(r.name for r in client.search_registered_models())
        raise SeqpipeError(f"no registered model named {name!r} in {shown_uri(mlflow.get_tracking_uri())}; "
                           f"registered models: {', '.join(names) or 'none'}") from None
    try:
        if m["alias"]:
            client.get_model_version_by_alias(name, m["alias"])
        else:
            client.get_model_version(name, m["version"])
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        what = f"alias @{m['alias']}" if m["alias"] else f"version {m['version']}"
        raise SeqpipeError(f"model {name!r} has no {what}; {describe_registry(client, name)}") from None


def load_model(model_uri: str, tracking_uri: str, generates: bool) -> object:
    """The registered pyfunc, refused with a clear message when it is not a text generator (`generates`) or is one
    (not `generates`). The store is checked first (within seconds), so a server that is down never looks like a
    missing model."""
    import mlflow

    from seqpipe.tracking.store import check_model_files, check_store, use_tracking_uri

    if "://" in model_uri or model_uri.startswith(("models:/", "runs:/")):
        check_store(tracking_uri, must_exist=True)
    use_tracking_uri(tracking_uri)
    check_model_uri(model_uri)
    check_model_files(model_uri)  # a moved mlruns/ folder is named, not an MLflow traceback
    model = mlflow.pyfunc.load_model(model_uri)
    from seqpipe.tasks import get_task

    task = get_task((model.metadata.metadata or {}).get("task", "lm"))
    if task.generates != generates:
        use, does = ("seqpipe generate", "generates text") if task.generates else ("seqpipe predict", "answers rows")
        raise SeqpipeError(f"{model_uri} is a {task.name!r} model, which {does}: use `{use}`")
    return model


def generate(model_uri: str, prompts: list[str], tracking_uri: str, **params: object) -> list[str]:
    import pandas as pd

    model = load_model(model_uri, tracking_uri, generates=True)
    return model.predict(pd.DataFrame({"prompt": prompts}), params=params)["text"].tolist()


def read_table(path: Path, column: str) -> pd.DataFrame:
    """A CSV/TSV/JSONL file with the input column (text; frames only in JSONL); errors name the file and what to
    change."""
    import pandas as pd

    if not path.is_file():
        raise SeqpipeError(f"input file not found: {path}")
    try:
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            frame = read_jsonl(path)
        elif path.suffix == ".txt":  # one input per line, no header
            lines = path.read_text(encoding="utf-8").splitlines()
            frame = pd.DataFrame({column: [line for line in lines if line.strip()]})
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


def read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line, values exactly as written (floats keep their digits; NaN stays a NaN, which the
    model then refuses by name, not as None)."""
    import json

    import pandas as pd

    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"line {n} is not JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(rows[-1], dict):
                    raise ValueError(f"line {n} is not a JSON object: write one {{\"column\": value}} per line")
    return pd.DataFrame(rows)


AUDIO = (".wav", ".flac", ".ogg", ".mp3", ".raw", ".pcm")  # what a folder's clips are


def audio_table(path: Path) -> pd.DataFrame:
    """The clips to transcribe: the audio files of a folder (sorted), the files a .txt/.lst lists (one per line;
    relative to the list's folder when not found as given), a CSV/TSV/JSONL with an `audio` column, or one clip."""
    import pandas as pd

    if path.is_dir():
        clips = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in AUDIO)
        if not clips:
            raise SeqpipeError(f"{path} holds no audio files ({', '.join(AUDIO)})")
        return pd.DataFrame({"audio": clips})
    if path.suffix.lower() in AUDIO:
        return pd.DataFrame({"audio": [str(path)]})
    if path.suffix in (".txt", ".lst"):
        if not path.is_file():
            raise SeqpipeError(f"input file not found: {path}")
        listed = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        clips = [c if Path(c).exists() or Path(c).is_absolute() else str(path.parent / c) for c in listed]
        if missing := [c for c in clips if not Path(c).is_file()]:
            raise SeqpipeError(f"{path} lists {len(missing)} audio files that do not exist (first: {missing[0]})")
        return pd.DataFrame({"audio": clips})
    return read_table(path, "audio")


def clips_request(clips: list, served: object) -> pd.DataFrame:
    """A request of local audio files, read here (the served model never opens a path): each file's samples and
    rate, its duration checked from its header (or, for headerless PCM, its size) before it is read. A value that is
    no file is passed on as it is (base64 text from a CSV), for the model to read or refuse."""
    import pandas as pd

    from seqpipe.data.audio import AudioError, open_file

    spec, limits = served.audio, served.limits  # type: ignore[attr-defined]
    samples, rates = [], []
    for clip in clips:
        if isinstance(clip, str) and len(clip) < 4096 and Path(clip).expanduser().is_file():
            try:
                data, rate = open_file(Path(clip), raw_rate=spec["sample_rate"]).check(
                    limits["max_audio_seconds"]).load()
            except AudioError as e:
                raise SeqpipeError(str(e)) from None
            samples.append(data)
            rates.append(rate)
        else:
            samples.append(clip)
            rates.append(None)
    return pd.DataFrame({"audio": samples, "sample_rate": rates})


def batches(texts: list, limits: dict, batch_size: int) -> list[tuple[int, int]]:
    """Row ranges [start, end) of at most `batch_size` rows whose characters (at least their tokens), or frames, fit
    in one request of a model with these limits."""
    out, start, size = [], 0, 0
    for i, text in enumerate(texts):
        if i > start and (i - start >= min(batch_size, limits["max_rows"]) or
                          size + len(text) > limits["max_total_tokens"]):
            out.append((start, i))
            start, size = i, 0
        size += len(text)
    return [*out, (start, len(texts))] if texts else out


def predict_file(model: object, input_path: Path, output_path: Path, column: str, batch_size: int = 256,
                 params: dict | None = None) -> int:
    """Predictions for every row of `input_path` (CSV, TSV, JSONL, or .txt: one input per line), written beside its
    columns to `output_path` (atomically; tab-separated when it ends in .tsv)."""
    import pandas as pd
    from tqdm import tqdm

    from seqpipe.atomic import atomic_path
    from seqpipe.data.requests import InputError

    served = model.unwrap_python_model()  # type: ignore[attr-defined]
    if served.audio and column == "audio":
        frame, batch_size = audio_table(input_path), min(batch_size, 16)  # clips of up to a minute each
    else:
        frame = read_table(input_path, column)
    if served.frames and not served.audio and input_path.suffix not in (".jsonl", ".json", ".ndjson"):
        raise SeqpipeError(f"{input_path}: this model reads frames (a T x F list of lists per row), which a CSV "
                           "cannot hold; give a JSONL file with one {\"frames\": [[...], ...]} object per line")
    texts = frame[column].tolist() if served.frames else frame[column].astype(str).tolist()
    parts = []
    ranges = batches(texts, served.limits, batch_size)
    for start, end in tqdm(ranges, desc="predict", unit="batch", disable=len(ranges) <= 1):
        request = clips_request(texts[start:end], served) if served.audio and column == "audio" else \
            pd.DataFrame({served.column: texts[start:end]})
        try:
            parts.append(model.predict(request, params=params))  # type: ignore[attr-defined]
        except InputError as e:
            where = f"data row {start + e.row + 1}" if e.row is not None else f"data rows {start + 1}-{end}"
            raise SeqpipeError(f"{input_path}, {where}: {e.reason}") from None
    result = pd.concat([frame.reset_index(drop=True), pd.concat(parts, ignore_index=True)], axis=1)
    with atomic_path(output_path) as tmp:
        result.to_csv(tmp, index=False, sep="\t" if output_path.suffix == ".tsv" else ",")
    return len(result)
