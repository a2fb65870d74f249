"""The shape of the house (issue #12): short functions, small modules, a short top level,
sqlite3 behind the SQLite backend, and tests/ mirroring poller/."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "poller"
TESTS = ROOT / "tests"

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450
MAX_TOP_MODULES = 12
SQLITE_HOME = "poller/state/sqlite/"
# Test folders that name no package: whole-daemon tests, data, the soak tool.
NOT_PACKAGES = {"e2e", "fixtures", "soak"}


def _modules() -> dict[str, Path]:
    """Every module of poller/, by its path from the repository root."""
    return {path.relative_to(ROOT).as_posix(): path for path in sorted(PACKAGE.rglob("*.py"))}


def _functions(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """(qualified name, lines from ``def`` to its last line) of every function, nested too."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                yield name, (child.end_lineno or child.lineno) - child.lineno + 1
                yield from walk(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)

    return walk(tree, "")


def _imports_sqlite3(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name == "sqlite3" or name.startswith("sqlite3.") for name in names):
            return True
    return False


def test_no_function_is_over_60_lines() -> None:
    too_long = [
        f"{module}::{name} ({lines} lines)"
        for module, path in _modules().items()
        for name, lines in _functions(ast.parse(path.read_text()))
        if lines > MAX_FUNCTION_LINES
    ]
    assert too_long == []


def test_no_module_is_over_450_lines() -> None:
    lines = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in lines.items() if n > MAX_MODULE_LINES} == {}


def test_at_most_12_modules_at_the_top_of_the_package() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_sqlite3_is_imported_only_by_the_sqlite_backend() -> None:
    outside = [
        name
        for name, path in _modules().items()
        if not name.startswith(SQLITE_HOME) and _imports_sqlite3(ast.parse(path.read_text()))
    ]
    assert outside == []


def _folders(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}


def test_every_test_folder_names_a_package_and_every_package_has_one() -> None:
    packages = {name for name in _folders(PACKAGE) if (PACKAGE / name / "__init__.py").exists()}
    folders = _folders(TESTS) - NOT_PACKAGES
    assert (sorted(folders - packages), sorted(packages - folders)) == ([], [])


def test_the_layout_checks_see_what_they_check() -> None:
    """The scans find the long function, the big module and the sqlite3 import they exist for."""
    source = "import sqlite3\nclass A:\n    def f(self):\n" + "        x = 1\n" * 60
    tree = ast.parse(source)
    assert ("A.f", 61) in set(_functions(tree))
    assert _imports_sqlite3(tree)
    assert _imports_sqlite3(ast.parse("from sqlite3 import Row"))
    assert not _imports_sqlite3(ast.parse("import sqlite3x\nfrom .sqlite3 import y"))
    assert "poller/cli.py" in _modules()
