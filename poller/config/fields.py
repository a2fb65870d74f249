"""How a frozen config dataclass is read from YAML data: one check per field, in order.

A field names its check with :func:`setting`. :func:`parse` runs the checks of a class's fields
in declaration order (a base class's fields first), then refuses keys it does not know, then runs
the class's ``_check`` (rules across fields). The first problem is raised as
:class:`~poller.config.messages.ConfigInvalid`, its key path built on the way out by
:func:`within`; a check that names no value shows the input it was given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar, cast

from poller.config.messages import _NO_VALUE, _UNSET, ConfigInvalid, _invalid, _missing
from poller.config.secret import SECRET_KEYS, Secret
from poller.record import Record

Check = Callable[[object], Any]
M = TypeVar("M", bound="Model")
T = TypeVar("T")

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class Model(Record):
    """The base of every config class: frozen dataclasses with slots, read by :func:`parse`.

    ``repr``, ``==`` and ``hash`` are ``Record``'s, shared by all, rather than code generated
    for each (``repr=False, eq=False``): compiling that code was a tenth of ``check-config``.
    """

    __slots__ = ()

    def _check(self) -> None:
        """Raise :func:`~poller.config.messages._invalid` when the fields do not fit together."""

    @classmethod
    def model_validate(cls, data: object) -> Self:
        """Read ``data`` (a mapping, as in the YAML file) into this class, or raise ValueError."""
        return parse(cls, data)

    @classmethod
    def model_construct(cls, **values: Any) -> Self:
        """Build from values already checked (or, in a test, values the checks would refuse)."""
        return cast(Self, cast(Any, cls)(**values))

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self:
        """A copy with the fields of ``update`` replaced, unchecked."""
        return cast(Self, dataclasses.replace(cast(Any, self), **(update or {})))


def setting(
    check: Check,
    *,
    default: object = dataclasses.MISSING,
    factory: Callable[[], object] | None = None,
    key: str | None = None,
) -> Any:
    """A field read by ``check``; ``key`` is its name in the file when that differs."""
    metadata = {"check": check, "key": key}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def key_of(field: dataclasses.Field[Any]) -> str:
    """What a config file writes for ``field``: its ``key`` (``from``), else its name."""
    return field.metadata.get("key") or field.name


def parse(cls: type[M], value: object) -> M:
    """Read the mapping ``value`` into ``cls``: its fields, then unknown keys, then ``_check``."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise _invalid("expected a mapping")
    fields = dataclasses.fields(cast(Any, cls))
    found: dict[str, object] = {}
    for field in fields:
        key = key_of(field)
        if key in value:
            found[field.name] = within(key, field.metadata["check"], value[key])
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise _missing(key)
    known = {key_of(field) for field in fields}
    for key in value:
        if not isinstance(key, str):
            raise ConfigInvalid("Keys should be strings", loc=(_key_part(key),), got=key)
        if key not in known:
            raise ConfigInvalid(f"unknown key{_suggestion(fields, key)}", loc=(key,), got=_NO_VALUE)
    made = cast(M, cast(Any, cls)(**found))
    made._check()
    return made


def within(part: object, check: Callable[[object], T], value: object) -> T:
    """Run ``check`` on ``value``, found at ``part`` of the key path."""
    try:
        return check(value)
    except ConfigInvalid as error:
        error.loc = (part, *error.loc)
        if error.got is _UNSET:
            error.got = value
        raise


def _suggestion(fields: tuple[dataclasses.Field[Any], ...], key: str) -> str:
    import difflib  # only a config with a misspelt key pays for it

    known = [key_of(field) for field in fields]
    known += [f"{field.name}_file" for field in fields if field.name in SECRET_KEYS]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


# -- checks of the shapes pydantic checked before: models, lists, optionals, literals, bools ------


def model(cls: type[M]) -> Callable[[object], M]:
    """The check of a nested section."""
    return lambda value: parse(cls, value)


def tagged(tags: Mapping[str, type[Model]], expected: str) -> Check:
    """The check of a section whose ``type`` key picks its class among ``tags``."""
    classes = tuple(tags.values())

    def check(value: object) -> Model:
        if isinstance(value, classes):
            return value
        if not isinstance(value, Mapping):
            raise _invalid("expected a mapping")
        if "type" not in value:
            raise ConfigInvalid(f"missing: {expected}", loc=("type",), got=_NO_VALUE)
        tag = value["type"]
        cls = tags.get(tag) if isinstance(tag, str) else None
        if cls is None:
            raise ConfigInvalid(expected, loc=("type",), got=str(tag))
        return parse(cls, value)

    return check


def items(
    check: Callable[[object], T], *, min_length: int = 0
) -> Callable[[object], tuple[T, ...]]:
    """The check of a list, each entry by ``check``."""

    def check_items(value: object) -> tuple[T, ...]:
        if not isinstance(value, list | tuple | set | frozenset):
            raise _invalid("expected a list")
        if len(value) < min_length:
            raise _invalid("expected at least one entry")
        return tuple(within(index, check, item) for index, item in enumerate(value))

    return check_items


def optional(check: Callable[[object], T]) -> Callable[[object], T | None]:
    """``check``, or null."""
    return lambda value: None if value is None else check(value)


def literal(*allowed: str) -> Callable[[object], str]:
    """One of the strings ``allowed``."""
    quoted = [repr(item) for item in allowed]
    expected = f"expected {', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else ""
    expected = expected or f"expected {quoted[0]}"

    def check(value: object) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        raise _invalid(expected)

    return check


def boolean(value: object) -> bool:
    """true or false; also 0/1 and yes/no, on/off, t/f, y/n, as text from ``${ENV}``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise _invalid("expected true or false")


def secret(after: Callable[[Secret], Secret] | None = None) -> Callable[[object], Secret]:
    """A string kept as a :class:`Secret`, then checked by ``after``."""

    def check(value: object) -> Secret:
        if isinstance(value, bytes | bytearray):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise _invalid("expected a string") from None
        if not isinstance(value, str):
            raise _invalid("expected a string")
        return Secret(value) if after is None else after(Secret(value))

    return check


def _key_part(key: object) -> object:
    """How a key that is not a string is placed in the path (as pydantic placed it: YAML's
    ``on:`` is ``[1]``, a date is its ``repr``)."""
    if isinstance(key, bool):
        return int(key)
    return key if isinstance(key, int) else repr(key)
