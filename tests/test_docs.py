"""The docs cannot go stale unnoticed: the layout page matches the tree, README stays short, every page is in the nav.

Fast and offline: no mkdocs build here (CI runs `mkdocs build --strict`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README_MAX_LINES = 220


def _gen_layout():
    spec = importlib.util.spec_from_file_location("gen_layout", DOCS / "gen_layout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(node) -> set[str]:
    """Every .md path named anywhere in mkdocs.yml's nav (lists of pages, {title: page} or {title: [...]})."""
    if isinstance(node, str):
        return {node} if node.endswith(".md") else set()
    if isinstance(node, list):
        return set().union(*(_nav_pages(item) for item in node)) if node else set()
    if isinstance(node, dict):
        return set().union(*(_nav_pages(value) for value in node.values())) if node else set()
    return set()


def test_layout_page_matches_the_tree():
    gen = _gen_layout()
    committed = (DOCS / "layout.md").read_text(encoding="utf-8")
    assert committed == gen.render(), (
        "docs/layout.md is stale (a module was added, moved, renamed or its docstring changed): "
        "run `python docs/gen_layout.py` and commit docs/layout.md"
    )


def test_layout_page_lists_every_module():
    """One list line per module (a package's line stands for its __init__.py), so no folder is skipped."""
    committed = (DOCS / "layout.md").read_text(encoding="utf-8")
    entries = [line for line in committed.splitlines() if line.lstrip().startswith("- ")]
    modules = [path for path in (ROOT / "src" / "seqpipe").rglob("*.py") if "__pycache__" not in path.parts]
    folders = {path.parent for path in modules} - {path.parent for path in modules if path.name == "__init__.py"}
    assert len(entries) == len(modules) + len(folders), "run `python docs/gen_layout.py` and commit docs/layout.md"


def test_first_sentence():
    first = _gen_layout().first_sentence
    assert first("One. Two.") == "One."
    assert first("The chorales of J. S. Bach in a corpus.\n\nMore.") == "The chorales of J. S. Bach in a corpus."
    assert first("Regression, e.g. the adding problem. Then.") == "Regression, e.g. the adding problem."
    assert first("Wrapped over\ntwo lines. Then.") == "Wrapped over two lines."
    assert first("No full stop") == "No full stop"
    assert first(None) == "(no docstring)"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail to a page under docs/"
    )


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    pages = {path.name for path in DOCS.glob("*.md")}
    assert pages - nav == set(), f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
    assert nav - pages == set(), f"mkdocs.yml's nav names pages that do not exist: {sorted(nav - pages)}"
