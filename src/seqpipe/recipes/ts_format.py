"""A parser of the sktime/UEA `.ts` format, the text format of the UCR/UEA time-series archives.

A header of `@key value` lines ends with `@data`; then one case per line: each dimension (channel) is a
comma-separated list of values, dimensions are separated by ":", and the class label (or regression target) is the
last ":" field. "?" marks a missing value. Lines starting with "#" (or "%", which some archive files use) are comments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqpipe.errors import SeqpipeError, unreadable

_BOOLEAN = {"timestamps", "missing", "univariate", "equallength", "targetlabel"}
_INTEGER = {"dimensions", "serieslength"}
_KEYS = ("@problemName, @timeStamps, @missing, @univariate, @dimensions, @equalLength, @seriesLength, @classLabel, "
         "@targetLabel, @data")


@dataclass
class TsData:
    series: list[np.ndarray] = field(default_factory=list)  # each float64 of shape (T_i, F): time steps x dimensions
    labels: list[str] = field(default_factory=list)  # "" when the file has no labels
    class_labels: list[str] = field(default_factory=list)  # as declared in @classLabel
    problem: str = ""
    regression: bool = False  # @targetLabel true: labels hold float targets as written in the file


def _error(source: str, lineno: int, problem: str, fix: str) -> SeqpipeError:
    return SeqpipeError(f"{source}, line {lineno}: {problem}; {fix}")


def _header_line(line: str, header: dict, source: str, lineno: int) -> None:
    """Record one `@key value...` line in `header`."""
    tokens = line.split()
    name, key, values = tokens[0], tokens[0][1:].lower(), tokens[1:]
    if key == "problemname":
        header["problem"] = " ".join(values)  # some files repeat it; the last one wins, as in aeon's loader
        return
    if key not in _BOOLEAN | _INTEGER | {"classlabel"}:
        what = f"{name} takes no value" if key == "data" else f"unknown header key {name!r}"
        raise _error(source, lineno, what, f"the .ts header keys are {_KEYS} ('@data' alone on its line)")
    if not values or (key != "classlabel" and len(values) != 1):
        raise _error(source, lineno, f"{name} needs one value", "write true or false (a number for "
                     "@dimensions and @seriesLength)")
    value = values[0].lower()
    if key in _INTEGER:
        if not value.isdigit() or int(value) == 0:
            raise _error(source, lineno, f"{name} {values[0]!r} is not a positive integer", "fix the header")
        header[key] = int(value)
        return
    if value not in ("true", "false"):
        raise _error(source, lineno, f"{name} {values[0]!r} is not true or false", "write true or false")
    header[key] = value == "true"
    if key == "timestamps" and header[key]:
        raise _error(source, lineno, "@timeStamps true is not supported",
                     "convert the cases to plain comma-separated values and write '@timeStamps false'")
    if key == "classlabel":
        if header[key] and len(values) == 1:
            raise _error(source, lineno, "@classLabel true declares no labels",
                         "list the class labels after it: '@classLabel true <label> <label>...'")
        header["class_labels"] = list(dict.fromkeys(values[1:]))


def _values(text: str, dim: int, source: str, lineno: int) -> list[float]:
    if not text.strip():
        raise _error(source, lineno, f"dimension {dim} is a series of length 0", "every dimension needs a value")
    out = []
    for v in text.split(","):
        try:
            out.append(math.nan if v.strip() == "?" else float(v))  # "?" is missing: prepare refuses NaN later
        except ValueError:
            raise _error(source, lineno, f"value {v.strip()!r} in dimension {dim} is not a number",
                         "write numbers separated by ',' (missing ones as '?'), dimensions separated by ':'") from None
    return out


def _case(line: str, header: dict, shape: dict, source: str, lineno: int) -> tuple[np.ndarray, str]:
    """Parse one data line into a (T, F) array and its label; `shape` keeps the first case's dimensions and length."""
    fields, label = line.split(":"), ""
    if header["classlabel"] or header["targetlabel"]:
        if len(fields) < 2:
            raise _error(source, lineno, "the case has no ':<label>' after its values",
                         "end every case with ':' and its label, as the header's @classLabel/@targetLabel says")
        label = fields.pop().strip()
        if header["classlabel"] and label not in header["class_labels"]:
            raise _error(source, lineno, f"class label {label!r} is not declared in @classLabel "
                         f"({' '.join(header['class_labels'])})", "add it to the @classLabel line or fix the case")
        if header["targetlabel"]:
            try:
                float(label)
            except ValueError:
                raise _error(source, lineno, f"target {label!r} is not a number",
                             "@targetLabel true needs a number after the last ':'") from None
    expected, why = shape.get("dims"), f"the first case (line {shape.get('line')}) has"
    if header.get("dimensions") or header.get("univariate"):
        expected, why = header.get("dimensions") or 1, "the header declares"
    if expected and len(fields) != expected:
        raise _error(source, lineno, f"the case has {len(fields)} dimensions but {why} {expected}",
                     "every case needs the same dimensions, separated by ':'")
    rows = [_values(f, d, source, lineno) for d, f in enumerate(fields, start=1)]
    for d, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise _error(source, lineno, f"dimension {d} has {len(row)} values but dimension 1 has {len(rows[0])}",
                         "all dimensions of one case need the same length (pad the shorter ones with '?')")
    if header.get("missing") is False and any(math.isnan(v) for row in rows for v in row):
        raise _error(source, lineno, "the case has missing values ('?') but the header says '@missing false'",
                     "write '@missing true' (prepare then refuses the case, naming it) or fill the values")
    length = header.get("serieslength") or shape.get("length")
    if header.get("equallength") and length and len(rows[0]) != length:
        raise _error(source, lineno, f"the case has {len(rows[0])} time steps but @equalLength true with length "
                     f"{length}", "set '@equalLength false' or fix the case")
    if not shape:
        shape.update(dims=len(fields), length=len(rows[0]), line=lineno)
    return np.array(rows, dtype=np.float64).T.copy(), label


def parse_ts(text: str, source: str) -> TsData:
    """Parse a .ts file's text; `source` names it in error messages. Missing values ("?") become NaN."""
    header: dict = {"classlabel": None, "targetlabel": False, "class_labels": [], "problem": ""}
    data: TsData | None = None
    shape: dict = {}
    lines = text.splitlines()
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line[0] in "#%":
            continue
        if data is None:
            if not line.startswith("@"):
                raise _error(source, lineno, "a data line comes before the @data line",
                             "end the header with a line '@data' before the cases")
            if line.lower() != "@data":
                _header_line(line, header, source, lineno)
                continue
            data = _start_data(header, source, lineno)
        else:
            series, label = _case(line, header, shape, source, lineno)
            data.series.append(series)
            data.labels.append(label)
    if data is None or not data.series:
        what = "the header has no @data line" if data is None else "the file has no cases after @data"
        raise _error(source, len(lines), what, "end the header with a line '@data' followed by one case per line")
    return data


def _start_data(header: dict, source: str, lineno: int) -> TsData:
    """Check the finished header (at the @data line) and start the result."""
    if header["classlabel"] is None and not header["targetlabel"]:
        raise _error(source, lineno, "the header declares neither @classLabel nor @targetLabel",
                     "add '@classLabel true <label>...', '@classLabel false' or '@targetLabel true'")
    if header["classlabel"] and header["targetlabel"]:
        raise _error(source, lineno, "the header declares both @classLabel true and @targetLabel true",
                     "a file has either class labels or regression targets; set one of them false")
    return TsData(class_labels=header["class_labels"], problem=header["problem"], regression=header["targetlabel"])


def read_ts(path: str | Path) -> TsData:
    """Read and parse a .ts file (utf-8)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise unreadable(e, path) from None
    except UnicodeDecodeError as e:
        raise SeqpipeError(f"{path}: not valid utf-8 at byte offset {e.start}; save the .ts file as utf-8") from None
    return parse_ts(text, str(path))
