"""One composition root: nothing below ``cli`` reads the environment or the YAML config.

``cli`` reads the config and the environment once and hands every part what it needs (the
config objects, the crash points, systemd's socket); ``config/`` is where YAML and ``${ENV}``
are read. ``lab/demo.py`` is the root of ``poller demo``: it writes the config it runs (PyYAML's
dump) and loads it with the variables it made, never the environment.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "poller"
ROOTS = {"cli.py"}
# module -> why it may touch YAML (never the environment)
YAML_ALLOWED = {"lab/demo.py": "writes the demo's config file, then loads it like cli does"}
ENV_NAMES = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})
YAML_READS = frozenset(
    {"load", "safe_load", "full_load", "unsafe_load", "load_all", "safe_load_all", "compose"}
)


def _below_cli() -> list[Path]:
    modules = sorted(PACKAGE.rglob("*.py"))
    return [
        path
        for path in modules
        if path.relative_to(PACKAGE).parts[0] != "config"
        and path.relative_to(PACKAGE).as_posix() not in ROOTS
    ]


def reads(source: str, module: str) -> Iterator[str]:
    """Say each read of the environment or of YAML in ``source`` (``module``: its path)."""
    yaml_allowed = module in YAML_ALLOWED
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            name = node.attr
            if owner == "os" and name in ENV_NAMES:
                yield f"line {node.lineno}: os.{name}"
            if owner == "yaml" and name in YAML_READS:
                yield f"line {node.lineno}: yaml.{name}"
            if name == "load_config" and not yaml_allowed:
                yield f"line {node.lineno}: load_config"
        elif isinstance(node, ast.ImportFrom):
            names = {alias.name for alias in node.names}
            if node.module == "os" and names & ENV_NAMES:
                yield f"line {node.lineno}: from os import {', '.join(sorted(names & ENV_NAMES))}"
            if (node.module or "").split(".")[0] == "yaml" and not yaml_allowed:
                yield f"line {node.lineno}: from {node.module} import"
            if "load_config" in names and not yaml_allowed:
                yield f"line {node.lineno}: load_config imported"
        elif isinstance(node, ast.Import) and not yaml_allowed:
            for alias in node.names:
                if alias.name.split(".")[0] == "yaml":
                    yield f"line {node.lineno}: import {alias.name}"


@pytest.mark.parametrize(
    "path", _below_cli(), ids=lambda path: path.relative_to(PACKAGE).as_posix()
)
def test_no_module_below_cli_reads_the_environment_or_yaml(path: Path) -> None:
    module = path.relative_to(PACKAGE).as_posix()
    assert list(reads(path.read_text(encoding="utf-8"), module)) == []


def test_the_modules_checked_include_those_that_once_read_the_environment() -> None:
    checked = {path.relative_to(PACKAGE).as_posix() for path in _below_cli()}
    assert {"daemon.py", "lab/crashpoints.py", "observe/sdnotify.py", "once.py"} <= checked
    assert not checked & ROOTS and not any(name.startswith("config/") for name in checked)


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.environ.get('POLLER_CRASH_AT')",
        "import os\nos.getenv('NOTIFY_SOCKET')",
        "from os import environ",
        "import yaml",
        "import yaml.loader",
        "from yaml import safe_load",
        "from poller.config import load_config",
        "import poller.config\npoller.config.load_config('x.yaml')",
    ],
)
def test_each_kind_of_read_is_found(source: str) -> None:
    assert len(list(reads(source, "daemon.py"))) >= 1


def test_the_demo_may_write_yaml_but_not_read_the_environment() -> None:
    writes = "import yaml\nfrom poller.config import load_config\nyaml.safe_dump({})"
    assert list(reads(writes, "lab/demo.py")) == []
    assert list(reads("import yaml\nyaml.safe_load('a: 1')", "lab/demo.py")) == [
        "line 2: yaml.safe_load"
    ]
    assert list(reads("import os\nos.environ['X'] = 'y'", "lab/demo.py")) == ["line 2: os.environ"]
