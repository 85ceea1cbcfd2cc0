"""recipe=vowels: the activity recipe's fetch on the Japanese Vowels set, read from a wheel built here (no download)."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
from conftest import CONF
from test_ts_format import _case_lines

from seqpipe import fetch, prepare
from seqpipe.config import compose

SPEAKERS = [str(s) for s in range(1, 10)]
HEADER = ("@problemName JapaneseVowels\n@univariate false\n@dimensions 12\n@equalLength false\n"
          f"@classLabel true {' '.join(SPEAKERS)}\n")


def _utterances(per_speaker: int, seed: int) -> str:
    """per_speaker cases of each speaker, 12 channels, 7-29 frames each (the real set's range)."""
    rng = np.random.default_rng(seed)
    cases = [":".join(",".join(f"{v:.3f}" for v in channel) for channel in rng.normal(size=(12, rng.integers(7, 30))))
             + f":{s}" for s in SPEAKERS for _ in range(per_speaker)]
    return _case_lines(HEADER, *cases)


def test_vowels_reads_nine_speakers_of_12_features_with_unequal_lengths(tmp_path):
    wheel = tmp_path / "aeon-1.6.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("aeon/datasets/data/JapaneseVowels/JapaneseVowels_TRAIN.ts", _utterances(5, 0))
        z.writestr("aeon/datasets/data/JapaneseVowels/JapaneseVowels_TEST.ts", _utterances(2, 1))
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()  # the cache holds it under this sha: nothing is downloaded
    cfg = compose(["recipe=vowels", f"recipe.fetch.sha256={sha}", f"paths.downloads={tmp_path}",
                   f"paths.raw={tmp_path / 'raw'}", f"paths.prepared={tmp_path / 'prepared'}",
                   f"paths.reports={tmp_path / 'reports'}"], config_dir=CONF)
    assert cfg.task == "classify" and cfg.prepare.inputs == "frames" and list(cfg.recipe.labels) == SPEAKERS
    assert cfg.recipe.fetch._target_ == "seqpipe.recipes.activity.fetch"  # the activity recipe's, not a copy
    assert fetch.run(cfg)["documents"] == 9 * 7
    docs = [json.loads(line) for line in (tmp_path / "raw" / "documents.jsonl").open()]
    assert {d["label"] for d in docs} == set(SPEAKERS) and {len(d["frames"][0]) for d in docs} == {12}
    assert len({len(d["frames"]) for d in docs}) > 1  # unequal lengths, kept as they are
    stats = prepare.run(cfg)
    assert (stats["train_examples"], stats["val_examples"], stats["test_examples"]) == (36, 9, 18)
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert meta["target"]["labels"] == SPEAKERS and meta["inputs"]["features"] == 12
