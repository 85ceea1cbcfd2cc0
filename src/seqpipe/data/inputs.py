"""Input kinds: what one step of a sequence is (`prepare.inputs`), as objects that own everything that depends on it.

- `Tokens`: text cut by the tokenizer into ids of the train split's vocabulary, read by an Embedding.
- `Frames`: a vector of F numbers per step (seqpipe.data.frames), standardised with the train split's mean and std and
  read by a Linear layer.
- `Audio`: frames computed from audio (log-mel, the recipe's `audio` spec); requests may send the audio itself.

Each owns the document field prepare reads, the vocabulary or statistics it fits on the train split (its
`meta["inputs"]`), the network's input layer, the request column and how a request's values are decoded and bounded,
the input example and signature a model is registered with, the files it carries, and how the command line reads a
file of inputs. Prepare, the networks, the served model and the command line ask the kind; none of them branches on
its name. `kind_of(meta["inputs"])` gives the kind of prepared data or a registered model; `configured(cfg)` the kind
a config will prepare."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, Schema
from omegaconf import DictConfig, OmegaConf
from torch import nn

from seqpipe.data.audio import AudioError, open_file, wav_base64
from seqpipe.data.documents import Document
from seqpipe.data.frames import FrameInput, fit_frames, frames_array
from seqpipe.data.requests import audio_from, frames_from, has_column, texts_from
from seqpipe.data.vocab import PAD_ID, UNK_ID, Vocab, load_with_tokenizer, prepared_vocab
from seqpipe.errors import SeqpipeError

JSONL = (".jsonl", ".json", ".ndjson")
AUDIO = (".wav", ".flac", ".ogg", ".mp3", ".raw", ".pcm")  # what a folder's clips are


class InputKind:
    """What every input kind provides. `inputs` is its `meta["inputs"]` (None before prepare has fitted it)."""
    name = ""     # prepare.inputs and meta["inputs"]["kind"]
    field = ""    # the document field prepare reads
    unit = ""     # what one step is called in messages

    def __init__(self, inputs: dict | None = None):
        self.inputs = inputs or {}

    # --- prepare -------------------------------------------------------------------------------------------------
    def reader(self, cfg: DictConfig) -> Callable[[Document], list[str] | np.ndarray]:
        """One document -> its input (tokens, or a (T, F) array refused with the row when malformed)."""
        raise NotImplementedError

    def fit(self, cfg: DictConfig, train: list) -> dict:
        """meta["inputs"], fitted on the train split's inputs (a vocabulary, or each feature's mean and std)."""
        raise NotImplementedError

    def key(self, x: list[str] | np.ndarray) -> object:
        """What makes two inputs the same (prepare.dedupe)."""
        raise NotImplementedError

    def stats(self) -> dict:
        """prepare's figures for the fitted input side."""
        raise NotImplementedError

    def store(self, xs: list) -> tuple[list[np.ndarray], np.dtype]:
        """A split's inputs as the arrays prepare saves, and their dtype."""
        return xs, np.dtype(np.float32)

    def split_stats(self, name: str, arrays: list[np.ndarray]) -> dict:
        """prepare's figures for one split."""
        return {f"{name}_{self.unit}": sum(len(a) for a in arrays)}

    def save(self, out: Path) -> None:
        """What else prepared/ holds for this kind (the vocabulary)."""

    def summary(self) -> str:
        """The input side in prepare's one-line report."""
        raise NotImplementedError

    def reread(self, prepared_dir: str | Path) -> dict:
        """meta["inputs"] of prepared data as the data module will read it."""
        return self.inputs

    # --- the network ---------------------------------------------------------------------------------------------
    def layer(self, dim: int) -> nn.Module:
        """The network's input layer: steps -> vectors of `dim`."""
        raise NotImplementedError

    # --- the served model ----------------------------------------------------------------------------------------
    def column(self, task_column: str) -> str:
        """The request column the served model reads (the task's own name for text: prompt, text, primer)."""
        return self.field

    def artifacts(self, prepared_dir: str | Path) -> dict[str, str]:
        """Files a registered model carries besides its weights."""
        return {}

    def load(self, artifacts: dict) -> tuple[Vocab | None, object]:
        """(vocabulary, tokenizer) of a served model, from its artifacts (None, None when it reads numbers)."""
        return None, None

    def read(self, model: object, model_input: object, what: str) -> tuple[list[torch.Tensor], list[float] | None]:
        """Every row of a request as the network's input, checked against `model`'s limits before any work; and, for
        text, the share of each row's tokens the vocabulary does not know (None otherwise)."""
        raise NotImplementedError

    def example(self, cfg: DictConfig, column: str) -> pd.DataFrame:
        """The input example a model is registered with."""
        raise NotImplementedError

    def schema(self, example: pd.DataFrame) -> object | None:
        """The input schema of the model's signature, when MLflow's inferred one would refuse what the model reads
        (None: inferred from the example)."""
        return None

    def signature(self, example: pd.DataFrame, output: pd.DataFrame, params: dict | None = None) -> object:
        """MLflow's signature of a model that reads this kind: inferred from the example and the answer, with this
        kind's input schema."""
        inferred = infer_signature(example, output, params=params)
        schema = self.schema(example)
        return inferred if schema is None else ModelSignature(schema, inferred.outputs, inferred.params)

    def output_columns(self) -> dict:
        """Columns every answer of a many-to-one or tagging model adds for this kind (the unknown-token share)."""
        return {}

    # --- the command line ----------------------------------------------------------------------------------------
    def table(self, path: Path, column: str) -> pd.DataFrame:
        """A file of inputs (CSV/TSV/JSONL, .txt one per line) with `column`; errors name the file and the fix."""
        return read_table(path, column)

    def values(self, frame: pd.DataFrame, column: str) -> list:
        return frame[column].astype(str).tolist()

    def rows_per_request(self, column: str, batch_size: int) -> int:
        """How many of a file's rows go into one request (--batch-size)."""
        return batch_size

    def request(self, values: list, column: str, limits: dict) -> pd.DataFrame:
        """A request of some of a file's rows."""
        return pd.DataFrame({column: values})

    def text_request(self, text: str) -> pd.DataFrame:
        """`seqpipe predict --text`."""
        return pd.DataFrame({"text": [text]})

    def audio_request(self, path: str, limits: dict) -> pd.DataFrame:
        """`seqpipe predict --audio`."""
        raise SeqpipeError(f"this model reads {self.name}, not audio: give --text or --input")


class Tokens(InputKind):
    name, field, unit = "tokens", "text", "tokens"
    vocab: Vocab

    def reader(self, cfg: DictConfig) -> Callable[[Document], list[str]]:
        tokenizer = instantiate(cfg.prepare.tokenizer)
        return lambda doc: tokenizer.tokenize(doc["text"])  # type: ignore[typeddict-item]

    def fit(self, cfg: DictConfig, train: list) -> dict:
        p = cfg.prepare
        self.vocab = Vocab.build(Counter(t for x in train for t in x), p.min_freq, p.max_size,
                                 tokenizer=dict(p.tokenizer))
        self.inputs = {"kind": self.name, "vocab_size": len(self.vocab)}
        return self.inputs

    def key(self, x: list[str] | np.ndarray) -> object:
        return tuple(x)

    def stats(self) -> dict:
        return {"vocab_size": len(self.vocab)}

    def store(self, xs: list) -> tuple[list[np.ndarray], np.dtype]:
        return [np.asarray(self.vocab.encode(x), dtype=np.int64) for x in xs], self.vocab.dtype()

    def split_stats(self, name: str, arrays: list[np.ndarray]) -> dict:
        steps = sum(len(a) for a in arrays)
        return {f"{name}_tokens": steps,
                f"{name}_unk_rate": round(float(sum(int((a == UNK_ID).sum()) for a in arrays) / steps), 6)}

    def save(self, out: Path) -> None:
        self.vocab.save(out / "vocab.json")

    def summary(self) -> str:
        return f"vocab {len(self.vocab):,}"

    def reread(self, prepared_dir: str | Path) -> dict:
        # the size of the vocabulary the data module will read, not a copy of it
        return {**self.inputs, "vocab_size": len(Vocab.load(prepared_vocab(prepared_dir)))}

    def layer(self, dim: int) -> nn.Module:
        return nn.Embedding(self.inputs["vocab_size"], dim, padding_idx=PAD_ID)

    def column(self, task_column: str) -> str:
        return task_column

    def artifacts(self, prepared_dir: str | Path) -> dict[str, str]:
        return {"vocab": str(prepared_vocab(prepared_dir))}

    def load(self, artifacts: dict) -> tuple[Vocab | None, object]:
        return load_with_tokenizer(artifacts["vocab"])

    def read(self, model: object, model_input: object, what: str) -> tuple[list[torch.Tensor], list[float] | None]:
        return model.encode_texts(texts_from(model_input, model.column, model.limits), what)  # type: ignore

    def example(self, cfg: DictConfig, column: str) -> pd.DataFrame:
        return pd.DataFrame({column: [cfg.evaluate.prompt]})

    def output_columns(self) -> dict:
        return {"unk_fraction": [0.0]}


class Frames(InputKind):
    name, field, unit = "frames", "frames", "steps"

    def reader(self, cfg: DictConfig) -> Callable[[Document], np.ndarray]:
        width = None  # of the first example: every example needs as many features per step

        def read(doc: Document) -> np.ndarray:
            nonlocal width
            try:
                x = frames_array(doc["frames"])  # type: ignore[typeddict-item]
            except ValueError as e:
                raise SeqpipeError(f"example {doc['id']!r}: {e}; fix the data (nothing was written)") from None
            if width is not None and x.shape[1] != width:
                raise SeqpipeError(f"example {doc['id']!r} has {x.shape[1]} features per step, the first example "
                                   f"{width}; every example needs the same number: fix the data")
            width = x.shape[1]
            return x
        return read

    def fit(self, cfg: DictConfig, train: list) -> dict:
        self.inputs = fit_frames(train)
        return self.inputs

    def key(self, x: list[str] | np.ndarray) -> object:
        return x.tobytes()  # type: ignore[union-attr]

    def stats(self) -> dict:
        return {"features": self.inputs["features"]}

    def summary(self) -> str:
        return f"{self.inputs['features']} features per step"

    def layer(self, dim: int) -> nn.Module:
        i = self.inputs
        return FrameInput(i["features"], dim, i.get("mean"), i.get("std"))

    def read(self, model: object, model_input: object, what: str) -> tuple[list[torch.Tensor], list[float] | None]:
        rows = frames_from(model_input, "frames", self.inputs["features"], model.limits)  # type: ignore[attr-defined]
        return [torch.from_numpy(r) for r in model.check_size(rows, 0)], None  # type: ignore[attr-defined]

    def example(self, cfg: DictConfig, column: str) -> pd.DataFrame:
        return pd.DataFrame({"frames": [[[0.0] * self.inputs["features"]] * 4]})

    def schema(self, example: pd.DataFrame) -> object:
        # any value: the model checks each row itself and names the row and the problem (MLflow's array schema would
        # refuse integers and say only "column ''")
        return Schema([ColSpec(AnyType(), "frames")])

    def table(self, path: Path, column: str) -> pd.DataFrame:
        if path.suffix not in JSONL:
            raise SeqpipeError(f"{path}: this model reads frames (a T x F list of lists per row), which a CSV cannot "
                               "hold; give a JSONL file with one {\"frames\": [[...], ...]} object per line")
        return read_table(path, column)

    def values(self, frame: pd.DataFrame, column: str) -> list:
        return frame[column].tolist()

    def text_request(self, text: str) -> pd.DataFrame:
        raise SeqpipeError("this model reads frames, not text: give --input FILE.jsonl with a 'frames' column (a "
                           "T x F list of lists per row)")


class Audio(Frames):
    """Frames computed from audio by the recipe's `audio` spec; the served model computes them the same way from the
    audio a request sends (or reads frames sent as they are). Its name is Frames' own: frames are what is prepared
    and what the network reads."""

    def fit(self, cfg: DictConfig, train: list) -> dict:
        super().fit(cfg, train)
        self.inputs["audio"] = OmegaConf.to_container(cfg.recipe.audio)
        return self.inputs

    def column(self, task_column: str) -> str:
        return "audio"

    def read(self, model: object, model_input: object, what: str) -> tuple[list[torch.Tensor], list[float] | None]:
        if has_column(model_input, "frames"):
            return super().read(model, model_input, what)
        rows = audio_from(model_input, self.inputs["audio"], model.limits)  # type: ignore[attr-defined]
        return [torch.from_numpy(r) for r in model.check_size(rows, 0)], None  # type: ignore[attr-defined]

    def example(self, cfg: DictConfig, column: str) -> pd.DataFrame:
        """A tenth of a second of a 440 Hz tone (base64 WAV)."""
        rate = self.inputs["audio"]["sample_rate"]
        tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(rate // 10) / rate)
        return pd.DataFrame({"audio": [wav_base64(tone, rate)]})

    def schema(self, example: pd.DataFrame) -> object:
        # base64 bytes or samples (with sample_rate); or frames, as computed
        return Schema([ColSpec(AnyType(), "audio", required=False), ColSpec("long", "sample_rate", required=False),
                       ColSpec(AnyType(), "frames", required=False)])

    def table(self, path: Path, column: str) -> pd.DataFrame:
        return audio_table(path) if column == "audio" else super().table(path, column)

    def rows_per_request(self, column: str, batch_size: int) -> int:
        return min(batch_size, 16) if column == "audio" else batch_size  # a clip holds up to a minute of audio

    def request(self, values: list, column: str, limits: dict) -> pd.DataFrame:
        return clips_request(values, self.inputs["audio"], limits) if column == "audio" else \
            super().request(values, column, limits)

    def audio_request(self, path: str, limits: dict) -> pd.DataFrame:
        if not Path(path).expanduser().is_file():
            raise SeqpipeError(f"audio file not found: {path}")
        return clips_request([path], self.inputs["audio"], limits)  # whatever its name, the file is read as a clip


KINDS = {"tokens": Tokens, "frames": Frames}  # prepare.inputs -> its kind


def kind_of(inputs: dict | int) -> InputKind:
    """The kind of prepared data or of a registered model, from its meta["inputs"] (a vocabulary size: tokens)."""
    if isinstance(inputs, int):
        return Tokens({"kind": "tokens", "vocab_size": inputs})
    if inputs.get("audio"):
        return Audio(inputs)
    return KINDS[inputs["kind"]](inputs)


def configured(cfg: DictConfig) -> InputKind:
    """The kind `cfg` prepares: prepare.inputs, frames computed from audio when the recipe has an audio spec."""
    kind = KINDS[cfg.prepare.inputs]
    return Audio() if kind is Frames and cfg.recipe.get("audio") else kind()


# --- files of inputs, read by the command line (a served model never opens a path) -----------------------------------
def read_table(path: Path, column: str) -> pd.DataFrame:
    """A CSV/TSV/JSONL file with the input column (text; frames only in JSONL); errors name the file and what to
    change."""
    if not path.is_file():
        raise SeqpipeError(f"input file not found: {path}")
    try:
        if path.suffix in JSONL:
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
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took the first field of each row for an index
        sep = "tab" if path.suffix == ".tsv" else "comma"
        raise SeqpipeError(f"{path}: its data rows have more fields than its header ({len(frame.columns)}): a text "
                           f"holding a {sep} must be quoted (\"...\"), or the header lacks a column name")
    if column not in frame.columns:
        raise SeqpipeError(f"{path} has no column {column!r}; its columns: {', '.join(map(str, frame.columns))} "
                           "(choose one with --column)")
    return frame


def read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line, values exactly as written (floats keep their digits; NaN stays a NaN, which the
    model then refuses by name, not as None)."""
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


def audio_table(path: Path) -> pd.DataFrame:
    """The clips to transcribe: the audio files of a folder (sorted), the files a .txt/.lst lists (one per line;
    relative to the list's folder when not found as given), a CSV/TSV/JSONL with an `audio` column, or one clip."""
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


def clips_request(clips: list, spec: dict, limits: dict) -> pd.DataFrame:
    """A request of local audio files, read here (the served model never opens a path): each file's samples and
    rate, its duration checked from its header (or, for headerless PCM, its size) before it is read. A value that is
    no file is passed on as it is (base64 text from a CSV), for the model to read or refuse."""
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
