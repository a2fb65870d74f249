"""The pieces of a one-line config error: key paths, short values, and the validator error.

Validators raise :func:`_invalid`; the loader turns it into ``key.path: expected ..., got ...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticCustomError

Loc = tuple[str | int, ...]


class _NoValue:
    """Marks an error that shows no ``got`` part (the input is a whole section)."""


_NO_VALUE = _NoValue()


def _invalid(expected: str, *, at: Loc = (), got: object = None) -> PydanticCustomError:
    """An error for the formatter: ``at`` extends the key path; ``got`` replaces the input."""
    context: dict[str, Any] = {"at": at}
    if got is not None:
        context["got"] = got
    return PydanticCustomError("poller", expected, context)


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
