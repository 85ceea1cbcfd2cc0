import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from seqpipe.errors import SeqpipeError
from seqpipe.recipes import activity
from seqpipe.recipes.ts_format import parse_ts, read_ts

AEON_SHA256 = "d05227086706f80111ac5fee8de4d5d3115bb3bcfd1c786c8629393055816409"
DOWNLOADS = Path(__file__).resolve().parents[1] / "data" / "downloads"

UNIVARIATE = """# A comment
% another comment style (some archive files use it)

@ProblemName Toy
@timestamps FALSE
@missing false
@univariate true
@equalLength true
@seriesLength 3
@classLabel true a b
@data
1,2,3:a

4.5,-5,6e-1:b
"""

MULTIVARIATE = """@problemName Two
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3:10,20,30:up
4,5:40,50:down
"""


def _case_lines(header: str, *cases: str) -> str:
    return header + "@data\n" + "".join(f"{c}\n" for c in cases)


HEADER = "@problemName Bad\n@univariate true\n@classLabel true a b\n"  # lines 1-3; @data is line 4, cases 5...


# --- the parser ------------------------------------------------------------------------------------------------

def test_univariate_file():
    data = parse_ts(UNIVARIATE, "toy.ts")
    assert data.problem == "Toy" and data.class_labels == ["a", "b"] and data.labels == ["a", "b"]
    assert not data.regression
    assert [s.shape for s in data.series] == [(3, 1), (3, 1)]
    assert data.series[1].dtype == np.float64
    assert data.series[1][:, 0].tolist() == [4.5, -5.0, 0.6]


def test_multivariate_file_is_time_steps_by_dimensions_and_may_have_unequal_lengths():
    data = parse_ts(MULTIVARIATE, "two.ts")
    assert [s.shape for s in data.series] == [(3, 2), (2, 2)]
    assert data.series[0].tolist() == [[1, 10], [2, 20], [3, 30]]
    assert data.labels == ["up", "down"]


def test_missing_values_become_nan():
    data = parse_ts(_case_lines("@missing true\n@classLabel true x\n", "1,?,3:x"), "m.ts")
    values = data.series[0][:, 0]
    assert values[0] == 1 and math.isnan(values[1]) and values[2] == 3


def test_unlabelled_and_regression_files():
    unlabelled = parse_ts(_case_lines("@classLabel false\n", "1,2:3,4"), "u.ts")
    assert unlabelled.labels == [""] and unlabelled.series[0].shape == (2, 2)
    target = parse_ts(_case_lines("@targetLabel true\n", "1,2:0.25"), "r.ts")
    assert target.regression and target.labels == ["0.25"] and target.series[0].shape == (2, 1)


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("@problemName X\n@colour blue\n@data\n", 2, "unknown header key '@colour'"),
    ("@classLabel true\n@data\n1:a\n", 1, "@classLabel true declares no labels"),
    ("@univariate maybe\n", 1, "@univariate 'maybe' is not true or false"),
    ("@dimensions two\n", 1, "@dimensions 'two' is not a positive integer"),
    ("@classLabel true a\n1,2:a\n", 2, "a data line comes before the @data line"),
    ("@problemName X\n@classLabel true a\n", 2, "the header has no @data line"),
    ("@classLabel true a\n@data now\n", 2, "@data takes no value"),
    ("@problemName X\n@data\n1:a\n", 2, "the header declares neither @classLabel nor @targetLabel"),
    ("@timeStamps true\n@classLabel true a\n@data\n(1,2.0):a\n", 1, "@timeStamps true is not supported"),
    ("@classLabel true a\n@data\n\n# nothing\n", 4, "the file has no cases after @data"),
    (_case_lines(HEADER, "1,2:a", "3,4:c"), 6, r"class label 'c' is not declared in @classLabel \(a b\)"),
    (_case_lines(HEADER, "1,2"), 5, "the case has no ':<label>' after its values"),
    (_case_lines(HEADER, "1,2:a", "1,x:a"), 6, "value 'x' in dimension 1 is not a number"),
    (_case_lines(HEADER, ":a"), 5, "dimension 1 is a series of length 0"),
    (_case_lines(HEADER, "1,2:3,4:a"), 5, "the case has 2 dimensions but the header declares 1"),
    (_case_lines("@dimensions 2\n@classLabel true a\n", "1:2:3:a"), 4, "the case has 3 dimensions but the header "
     "declares 2"),
    (_case_lines("@univariate false\n@classLabel true a\n", "1:2:a", "1:a"), 5, r"the case has 1 dimensions but the "
     r"first case \(line 4\) has 2"),
    (_case_lines("@univariate false\n@classLabel true a\n", "1,2:3,4:a", "1,2,3:4,5:a"), 5,
     "dimension 2 has 2 values but dimension 1 has 3"),
    (_case_lines("@equalLength true\n@seriesLength 2\n@classLabel true a\n", "1,2:a", "1,2,3:a"), 6,
     "the case has 3 time steps but @equalLength true with length 2"),
    (_case_lines("@targetLabel true\n", "1,2:high"), 3, "target 'high' is not a number"),
])
def test_bad_input_names_the_source_line_and_problem(text, line, problem):
    with pytest.raises(SeqpipeError, match=f"^bad.ts, line {line}: {problem}; "):
        parse_ts(text, "bad.ts")


def test_read_ts_reads_a_file_and_names_unreadable_ones(tmp_path):
    path = tmp_path / "toy.ts"
    path.write_text(UNIVARIATE, encoding="utf-8")
    assert read_ts(path).labels == ["a", "b"]
    with pytest.raises(SeqpipeError, match="missing.ts: cannot be read"):
        read_ts(tmp_path / "missing.ts")


# --- the activity recipe ---------------------------------------------------------------------------------------

def _fake_wheel(tmp_path: Path) -> str:
    wheel = tmp_path / "aeon-1.6.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("aeon/__init__.py", "")
        z.writestr("aeon/datasets/data/Toy/Toy_TRAIN.ts", UNIVARIATE)
        z.writestr("aeon/datasets/data/Toy/Toy_TEST.ts", _case_lines("@classLabel true a b\n", "7,8:b"))
        z.writestr("aeon/datasets/data/Half/Half_TRAIN.ts", UNIVARIATE)  # no test file: not a dataset
        z.writestr("aeon/datasets/data/Lynx/Lynx.csv", "1,2\n")
    return hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_activity_fetch_keeps_the_archive_split(tmp_path):
    sha = _fake_wheel(tmp_path)  # already in the cache: no download
    docs = activity.fetch("Toy", "aeon", "1.6.0", sha, str(tmp_path))
    assert [(d["id"], d["split"], d["label"]) for d in docs] == [
        ("Toy/train/0", "train", "a"), ("Toy/train/1", "train", "b"), ("Toy/test/0", "test", "b")]
    assert [np.array(d["frames"]).shape for d in docs] == [(3, 1), (3, 1), (2, 1)]
    assert docs[2]["frames"] == [[7.0], [8.0]]


def test_activity_fetch_lists_the_datasets_for_an_unknown_name(tmp_path):
    sha = _fake_wheel(tmp_path)
    with pytest.raises(SeqpipeError, match=r"has no dataset 'toy'; set recipe.dataset to one of: Toy \("):
        activity.fetch("toy", "aeon", "1.6.0", sha, str(tmp_path))


@pytest.mark.slow
def test_activity_fetch_reads_the_real_gunpoint():
    """The pinned wheel from the package index (pip download, sha256 checked; reused once in data/downloads)."""
    docs = activity.fetch("GunPoint", "aeon", "1.6.0", AEON_SHA256, str(DOWNLOADS))
    assert sum(d["split"] == "train" for d in docs) == 50 and sum(d["split"] == "test" for d in docs) == 150
    assert {np.array(d["frames"]).shape for d in docs} == {(150, 1)}
    assert {d["label"] for d in docs} == {"1", "2"}
