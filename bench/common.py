"""What the bench scripts share: the median wall time of a command, and the table of figures they print (and write
as JSON with --json). Imported as `common` (a script's folder is first on sys.path)."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path


def wall(cmd: list[str], repeat: int = 5, env: dict | None = None) -> tuple[float, str]:
    """Median wall time of a command in seconds, and the first run's stderr; CalledProcessError if a run fails."""
    times, err = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        times.append(time.perf_counter() - t)
        err = done.stderr if err is None else err
    return statistics.median(times), err or ""


def report(rows: dict, json_path: str | None, number: str = ">10.3f") -> None:
    """Print the figures as an aligned table (`number`: the format of a value) and write them to `json_path`."""
    width = max(map(len, rows))
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:{number}}")
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2) + "\n")
