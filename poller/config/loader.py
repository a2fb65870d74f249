"""Loading: read the YAML file, resolve it, validate it, and turn the first problem into one line.

Messages never carry a secret: a secret key's value is shown as ``<hidden>``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from poller.config.interpolate import (
    _anchor_state_path,
    _interpolate,
    _Problem,
    _read_secret_files,
)
from poller.config.messages import _NO_VALUE, Loc, _dotted, _NoValue, _short
from poller.config.models import (
    SECRET_KEYS,
    Config,
    DiscordSinkConfig,
    EmailSinkConfig,
    SlackSinkConfig,
    TeamsSinkConfig,
    WebhookSinkConfig,
    _SinkCommon,
)
from poller.errors import ConfigError

# Keys whose values are shown as <hidden> in errors: secrets, and headers (they may hold tokens).
_HIDDEN_KEYS = SECRET_KEYS | {"headers"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys instead of keeping the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
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
        return Config.model_validate(resolved)
    except ValidationError as exc:
        # Not chained: pydantic's own text repeats the input values, secrets included.
        raise ConfigError(f"{source}: {_describe(exc, from_files)}") from None


# -- one-line errors ----------------------------------------------------------------------

_SINK_TAGS: Mapping[str, type[_SinkCommon]] = {
    "webhook": WebhookSinkConfig,
    "slack": SlackSinkConfig,
    "teams": TeamsSinkConfig,
    "discord": DiscordSinkConfig,
    "email": EmailSinkConfig,
}
_BUILTIN_EXPECTED: Mapping[str, str] = {
    "missing": "missing: this key is required",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "too_short": "expected at least one entry",
    "union_tag_invalid": "expected webhook, slack, teams, discord or email",
    "union_tag_not_found": "missing: expected webhook, slack, teams, discord or email",
}


def _describe(exc: ValidationError, from_files: set[Loc]) -> str:
    """One line for the first error: ``key.path: expected ..., got ...``."""
    error = exc.errors(include_url=False)[0]
    raw_loc: Loc = tuple(error["loc"])
    context: dict[str, Any] = dict(error.get("ctx") or {})
    kind = error["type"]
    loc = _strip_tags(raw_loc)
    got: object = context.get("got", error.get("input"))
    if kind == "poller":
        loc = (*loc, *context["at"])
        expected = str(error["msg"])
    elif kind == "extra_forbidden":
        expected = "unknown key" + _suggestion(raw_loc)
        got = _NO_VALUE  # a misspelt secret key must not show its value
    elif kind == "literal_error":
        expected = f"expected {context['expected']}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        loc, got = (*loc, "type"), context.get("tag")
        expected = _BUILTIN_EXPECTED[kind]
    else:
        expected = _BUILTIN_EXPECTED.get(kind, str(error["msg"]))
    hidden = any(part in _HIDDEN_KEYS for part in loc if isinstance(part, str))
    if loc in from_files:
        loc = (*loc[:-1], f"{loc[-1]}_file")
    if kind in ("missing", "union_tag_not_found") or isinstance(got, _NoValue):
        return f"{_dotted(loc)}: {expected}"
    return f"{_dotted(loc)}: {expected}, got {'<hidden>' if hidden else _short(got)}"


def _strip_tags(loc: Loc) -> Loc:
    """Drop the discriminator tag pydantic puts after ``sinks[i]``."""
    if len(loc) >= 3 and loc[0] == "sinks" and isinstance(loc[1], int) and loc[2] in _SINK_TAGS:
        return (*loc[:2], *loc[3:])
    return loc


def _suggestion(loc: Loc) -> str:
    model: type[BaseModel] | None = Config
    for index, part in enumerate(loc[:-1]):
        if model is None or isinstance(part, int):
            continue
        # The discriminator tag after ``sinks[i]`` picks the model of that sink's type.
        if part in _SINK_TAGS and index == 2 and loc[0] == "sinks":
            model = _SINK_TAGS[part]
        elif part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
    if model is None:
        return ""
    # What a config file writes: an alias (``from``) rather than the field's own name.
    known = [field.alias or k for k, field in model.model_fields.items()]
    known += [f"{k}_file" for k in model.model_fields if k in SECRET_KEYS]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model a field holds (through Optional, tuple and Annotated), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if arg is not Ellipsis and (found := _model_in(arg)) is not None:
            return found
    return None
