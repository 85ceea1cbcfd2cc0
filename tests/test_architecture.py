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


# --- input kinds and task capabilities are decided in one place ---------------------------------------------------
KIND_WORDS = {"tokens", "frames", "audio"}  # the input kinds (and the request columns named after them)
CAPABILITIES = {"generates", "decodes", "reads_prefix", "refuses_long", "aligned", "long_inputs", "command", "frames",
                "audio", "carries_state", "section"}
# The branch sites left outside seqpipe/tasks and seqpipe/data/inputs.py, each for a reason that is not a kind or a
# capability being interpreted: file -> how many.
JUSTIFIED = {
    "cli/predict.py": 1,  # load_model: the CLI command must be the one the task answers with (task.command)
    "prepare.py": 1,      # "the corpus is empty": no document has text, frames or notes (what recipes write)
}


def branch_sites(path: Path) -> list[int]:
    """The statements (their first lines) that compare with or test an input kind's name, `["kind"]` or a task
    capability. A type test of a value (`isinstance(doc.get("frames"), np.ndarray)`) is not a kind decision."""
    import ast

    def names_kind(node: ast.AST) -> bool:
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            return False
        return (isinstance(node, ast.Constant) and node.value in KIND_WORDS
                or isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                and node.slice.value == "kind"
                or isinstance(node, ast.Attribute) and node.attr in CAPABILITIES
                and getattr(node.value, "id", None) != "args"  # the command line's own options (args.audio)
                or any(names_kind(child) for child in ast.iter_child_nodes(node)))

    tree = ast.parse(path.read_text(encoding="utf-8"))
    statement = {}  # node -> the statement it belongs to
    for stmt in (n for n in ast.walk(tree) if isinstance(n, ast.stmt)):
        for child in ast.walk(stmt):
            statement[child] = stmt  # inner statements come later in the walk and overwrite: the innermost wins
    lines = set()
    for node in ast.walk(tree):
        tests = [node.test] if isinstance(node, ast.If | ast.IfExp | ast.While) else []
        if isinstance(node, ast.Compare):
            tests = [node.left, *node.comparators]
        elif isinstance(node, ast.comprehension):
            tests = list(node.ifs)
        if any(names_kind(test) for test in tests):
            lines.add(statement[node].lineno)
    return sorted(lines)


def test_input_kinds_and_task_capabilities_are_decided_by_their_objects():
    """Outside the tasks and the input kinds, code asks a Task or an InputKind to act; it does not branch on which
    kind or what a task can do (a new kind or task then changes one module). The few sites left are listed with
    their reason in JUSTIFIED."""
    package = ROOT / "src" / "seqpipe"
    found = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel.startswith(("tasks/", "recipes/")) or rel == "data/inputs.py":
            continue  # the tasks and the kinds decide; recipes write documents
        if lines := branch_sites(path):
            found[rel] = lines
    assert {rel: len(lines) for rel, lines in found.items()} == JUSTIFIED, found


def test_the_branch_site_scan_sees_a_branch_on_an_input_kind(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('def f(meta, task):\n    if meta["inputs"]["kind"] == "tokens":\n        return 1\n'
                      '    return 2 if task.decodes else 3\n')
    assert branch_sites(module) == [2, 4]
