"""The package's import rules (pyproject.toml, [tool.importlinter]), checked by lint-imports as `make lint` runs it:
the layers hold and no package has an import cycle, and the check is not blind: an upward import added to a copy of
the package breaks both contracts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = str(Path(sys.executable).parent / "lint-imports")


def lint(src: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts on the package under `src` (first on the path, before the
    installed one)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"], cwd=src,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layers_and_has_no_import_cycles():
    result = lint(ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_layers_and_makes_a_cycle(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "seqpipe", src / "seqpipe", ignore=shutil.ignore_patterns("__pycache__"))
    vocab = src / "seqpipe" / "data" / "vocab.py"
    vocab.write_text(vocab.read_text() + "\n\ndef _upward():\n    from seqpipe.tasks.base import Task  # noqa: F401\n")
    result = lint(src)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "seqpipe.data is not allowed to import seqpipe.tasks" in result.stdout
    assert "No cycles are allowed in seqpipe." in result.stdout
    assert "Contracts: 0 kept, 2 broken." in result.stdout
