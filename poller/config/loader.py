"""Loading: read the YAML file, resolve it, validate it, and turn the first problem into one line.

Messages never carry a secret: a secret key's value is shown as ``<hidden>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from poller.config.fields import parse
from poller.config.interpolate import (
    _anchor_state_path,
    _interpolate,
    _Problem,
    _read_secret_files,
)
from poller.config.messages import ConfigInvalid, Loc, _dotted, _short, describe
from poller.config.models import Config
from poller.errors import ConfigError

_MERGE = "tag:yaml.org,2002:merge"


class _UniqueKeys(yaml.constructor.SafeConstructor):
    """Safe construction that rejects duplicate keys instead of keeping the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue  # ``<<: *base``: its keys may be overridden here, as YAML says
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    """PyYAML's own parser: its messages name what it found (a tab, an alias)."""


# libyaml's parser (PyYAML's C binding), about 1 ms less per config; None without it.
_FAST_LOADER: type[yaml.CSafeLoader] | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _FastUniqueKeyLoader(_UniqueKeys, yaml.CSafeLoader):
        """libyaml's parser with the same construction."""

    _FAST_LOADER = _FastUniqueKeyLoader


def _parse_yaml(text: str) -> object:
    """Parse ``text``, with libyaml when it is there; a problem is told in PyYAML's words.

    Both parsers read YAML 1.1 and feed the same construction, at the same positions; where
    libyaml refuses, PyYAML parses again: its answer (a document, or the error raised) is kept.
    """
    if _FAST_LOADER is not None:
        try:
            return yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError:
            pass
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate the YAML config file at ``path``."""
    file = Path(path)
    source = os.fspath(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: expected UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        data = _parse_yaml(text)
    except yaml.YAMLError as exc:
        # Only the position and the parser's problem: the YAML text may hold secrets.
        raise ConfigError(f"{source}: {_yaml_problem(exc)}") from None
    base_dir = file.absolute().parent
    return parse_config(data, os.environ if env is None else env, source, base_dir=base_dir)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}: {' '.join(str(problem).split())}"


def parse_config(
    data: object,
    env: Mapping[str, str],
    source: str = "<config>",
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Validate already-parsed YAML ``data``; relative paths are taken from ``base_dir``."""
    if data is None:
        raise ConfigError(f"{source}: the configuration is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_short(data)}")
    base = None if base_dir is None else Path(base_dir)
    from_files: set[Loc] = set()
    try:
        resolved = _interpolate(data, env, ())
        assert isinstance(resolved, dict)
        _read_secret_files(resolved, base, from_files)
        _anchor_state_path(resolved, base)
    except _Problem as problem:
        raise ConfigError(f"{source}: {_dotted(problem.where)}: {problem.message}") from None
    try:
        return parse(Config, resolved)
    except ConfigInvalid as exc:
        # Not chained: the error holds the input value, which may be a secret.
        raise ConfigError(f"{source}: {describe(exc, from_files)}") from None
