"""The config's YAML is parsed by libyaml when PyYAML has it, told in PyYAML's own words."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from poller.config import loader
from poller.errors import ConfigError
from tests.support import ROOT

CONFIGS = ["config.example.yaml", "deploy/compose/config.yaml", "deploy/compose/ha.yaml"]


def test_pyyaml_here_has_libyaml() -> None:
    # PyYAML's wheels bundle it: were it gone, configs would parse in pure Python, slower.
    assert loader._FAST_LOADER is not None


@pytest.mark.parametrize("name", CONFIGS)
def test_both_parsers_read_the_shipped_configs_alike(name: str) -> None:
    text = (ROOT / name).read_text()
    assert loader._FAST_LOADER is not None
    fast = yaml.load(text, Loader=loader._FAST_LOADER)  # noqa: S506 - SafeLoader subclasses
    pure = yaml.load(text, Loader=loader._UniqueKeyLoader)  # noqa: S506
    assert fast == pure
    assert loader._parse_yaml(text) == pure


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\t twilio: {}\n", "line 1, column 1: found character '\\t' that cannot start any token"),
        ("twilio: *base\n", "line 1, column 9: found undefined alias 'base'"),
        ("twilio: {a: 1\n", "line 2, column 1: expected ',' or '}', but got '<stream end>'"),
        ("twilio: {}\nstate: {}\ntwilio: {}\n", "line 3, column 1: duplicate key 'twilio'"),
    ],
    ids=["tab", "alias", "flow", "duplicate"],
)
def test_a_yaml_problem_is_told_in_pyyamls_words(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        loader.load_config(path, env={})
    assert str(info.value) == f"{path}: invalid YAML at {expected}"


def test_a_merge_key_is_read_and_its_keys_may_be_overridden() -> None:
    text = "base: &base\n  x: 1\n  y: 2\nsink:\n  <<: *base\n  y: 3\n"
    assert loader._parse_yaml(text) == {"base": {"x": 1, "y": 2}, "sink": {"x": 1, "y": 3}}


def test_a_key_written_twice_beside_a_merge_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("base: &base {x: 1}\nsink:\n  <<: *base\n  y: 3\n  y: 4\n")
    with pytest.raises(ConfigError, match="line 5, column 3: duplicate key 'y'"):
        loader.load_config(path, env={})
