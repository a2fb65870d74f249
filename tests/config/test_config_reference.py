"""docs/configuration.md lists exactly the keys the config models accept."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import get_args, get_type_hints

from poller.config import SECRET_KEYS, Config
from poller.config.secret import Secret

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _models_in(annotation: object) -> list[type]:
    """The config dataclasses a field holds, through Optional, tuple and unions."""
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _is_sequence(annotation: object) -> bool:
    """True when the field is a tuple of models (documented as ``key[].sub``)."""
    origin = getattr(annotation, "__origin__", None)
    return origin is tuple and bool(_models_in(annotation))


def model_key_paths(model: type, prefix: str = "") -> set[str]:
    """Every key path the models accept, secrets' ``_file`` variants included."""
    paths: set[str] = set()
    hints = get_type_hints(model)
    for field in dataclasses.fields(model):
        name = field.metadata.get("key") or field.name  # what a file writes (``from``)
        path = f"{prefix}{name}"
        paths.add(path)
        annotation = hints[field.name]
        if name in SECRET_KEYS or Secret in get_args(annotation):  # state.url: a Secret too
            paths.add(f"{path}_file")
        subs = _models_in(annotation)
        inner = f"{path}[]." if _is_sequence(annotation) else f"{path}."
        for sub in subs:
            paths |= model_key_paths(sub, inner)
    return paths


def documented_key_paths() -> set[str]:
    """The first column of every reference table row: ``| `key.path` | ...``."""
    return set(re.findall(r"^\| `([^`]+)` \|", DOC.read_text(), flags=re.MULTILINE))


def documented_sections() -> set[str]:
    """Top-level sections documented by a heading: ``## `twilio` ``."""
    return set(re.findall(r"^## `([a-z_]+)`$", DOC.read_text(), flags=re.MULTILINE))


def test_walk_finds_nested_sequences_and_both_sink_kinds() -> None:
    paths = model_key_paths(Config)
    assert {"watch[].service_sid", "sinks[].url", "sinks[].webhook_url"} <= paths
    assert {"sinks[].filter.session_sid", "twilio.auth_token_file", "http.listen"} <= paths


def test_every_model_key_is_documented() -> None:
    documented = documented_key_paths() | documented_sections()
    assert model_key_paths(Config) - documented == set()


def test_every_documented_key_exists_in_the_models() -> None:
    assert documented_key_paths() - model_key_paths(Config) == set()
    assert documented_sections() == {field.name for field in dataclasses.fields(Config)}
