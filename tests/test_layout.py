"""The package's rooms keep to their doors: each subpackage imports only what its docstring
allows (the stages form a chain with no cycle), and the app reaches the library only through
the public API and its two internal entry points: the graph-free step and its native twin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import torchnce

PACKAGE = Path(torchnce.__file__).resolve().parent
ALLOWED = {  # subpackage -> the torchnce subpackages it may import
    "_common": {"_common"},
    "_sampling": {"_common", "_native", "_sampling"},
    "_sampled": {"_common", "_native", "_sampling", "_sampled"},
    "_exact": {"_common", "_sampled", "_exact"},
    "_layers": {"_common", "_native", "_sampling", "_sampled", "_exact", "_layers"},
    "_contrastive": {"_common", "_sampling", "_contrastive"},
    "_native": {"_common", "_native"},
    "datasets": {"datasets"},
    "distributed": {"_common", "_sampling", "_sampled", "_exact", "_layers", "_contrastive",
                    "distributed"},
}
APP_ENTRY_POINTS = {"torchnce", "torchnce.distributed", "torchnce.datasets",
                    "torchnce._sampled.step",
                    "torchnce._native.word2vec", "torchnce._native.sampling",
                    "torchnce._native.corpus"}
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """The ``torchnce...`` modules a file imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == "torchnce" or n.startswith("torchnce.")}


def room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_stay_within_the_allowed_rooms(path):
    here = room(path)
    for name in imported(path):
        target = name.split(".")[1] if "." in name else ""
        if here == "app":
            assert name in APP_ENTRY_POINTS or target == "app", f"the app imports {name}"
        elif here in ALLOWED:
            assert target in ALLOWED[here], f"{here} must not import {name}"
        else:  # __init__.py and __main__.py
            assert target != "app" or path.name == "__main__.py", f"{path.name} imports {name}"


def test_every_room_says_what_it_holds_and_may_import():
    for name in [*ALLOWED, "app"]:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc, f"{name}/__init__.py has no docstring"
        assert "import" in doc, f"{name} does not say what it may import"
