"""The pieces of a one-line config error: key paths, short values, and the validation error.

Checks raise :func:`_invalid`; :func:`describe` turns it into ``key.path: expected ..., got ...``.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from poller.config.secret import SECRET_KEYS

# Keys whose values are shown as <hidden> in errors: secrets, and headers (they may hold tokens).
_HIDDEN_KEYS = SECRET_KEYS | {"headers"}

Loc = tuple[object, ...]


class _NoValue:
    """Marks an error that shows no ``got`` part (the input is a whole section)."""


_NO_VALUE = _NoValue()
_UNSET = object()  # no ``got`` given yet: the input of the check that raised is shown


class ConfigInvalid(ValueError):
    """The first problem of a config: where (``loc``), what was expected, and the value got.

    ``str()`` is the one-line description, with the value of a secret key hidden.
    """

    def __init__(self, expected: str, *, loc: Loc = (), got: object = _UNSET) -> None:
        super().__init__(expected)
        self.expected = expected
        self.loc = loc
        self.got = got

    def __str__(self) -> str:
        return describe(self)


def _invalid(expected: str, *, at: Loc = (), got: object = None) -> ConfigInvalid:
    """An error for the formatter: ``at`` extends the key path; ``got`` replaces the input."""
    return ConfigInvalid(expected, loc=at, got=_UNSET if got is None else got)


def _missing(key: str) -> ConfigInvalid:
    return ConfigInvalid("missing: this key is required", loc=(key,), got=_NO_VALUE)


def describe(error: ConfigInvalid, from_files: Set[Loc] = frozenset()) -> str:
    """One line: ``key.path: expected ..., got ...``; ``from_files`` names ``X_file`` keys."""
    loc = error.loc
    hidden = any(part in _HIDDEN_KEYS for part in loc if isinstance(part, str))
    if loc in from_files:
        loc = (*loc[:-1], f"{loc[-1]}_file")
    if isinstance(error.got, _NoValue) or error.got is _UNSET:
        return f"{_dotted(loc)}: {error.expected}"
    return f"{_dotted(loc)}: {error.expected}, got {'<hidden>' if hidden else _short(error.got)}"


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _short(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value!r}"
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 42 else f"{text[:40]}...'"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "an empty list" if not value else "a list"
    return f"a {type(value).__name__}"
