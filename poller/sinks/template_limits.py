"""The bounds of the template sandbox: what a template may make and do, and how it is counted.

:mod:`poller.sinks.templates` calls these from every hook of its environment. A bound that is
hit raises :class:`TemplateLimitError`, whose ``reason`` is a short, bounded name (a metric
label): ``too_large``, ``range_too_long``, ``output_too_long``, ``too_many_operations``,
``too_slow``.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast

from jinja2.exceptions import SecurityError, UndefinedError

MAX_SIZE = 50_000
MAX_WORK = 2_000_000
MAX_RANGE = 1_000
MAX_INT_BITS = 1_024
MAX_OPERATIONS = 1_000_000
# All text produced in one render, captured ({% set %} blocks, macros) or not.
MAX_EMITTED = 400_000
RENDER_SECONDS = 2.0

_DIGITS = re.compile(r"\d+")


class TemplateLimitError(SecurityError):
    """A template went past one of the sandbox's bounds; ``reason`` says which."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class _Budget:
    deadline: float
    operations: int
    emitted: int = 0

    def tick(self) -> None:
        self.operations -= 1
        if self.operations < 0:
            raise TemplateLimitError("too_many_operations", "the template did too much work")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError("too_slow", "the template ran out of time")

    def count_output(self, size: int) -> None:
        self.emitted += size
        if self.emitted > MAX_EMITTED:
            raise TemplateLimitError(
                "output_too_long", f"the template wrote more than {MAX_EMITTED}"
            )


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("template_budget")


@contextlib.contextmanager
def budget(seconds: float, operations: int) -> Iterator[None]:
    """Count what template code does inside the ``with`` block, against these bounds."""
    token = _BUDGET.set(_Budget(deadline=time.monotonic() + seconds, operations=operations))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def count_output(size: int) -> None:
    """Count ``size`` characters written (captured or not) against MAX_EMITTED."""
    _current().count_output(size)


def _current() -> _Budget:
    found = _BUDGET.get(None)
    if found is None:  # only render() evaluates templates; anything else is refused
        raise TemplateLimitError("not_rendering", "template code ran outside a render")
    return found


def tick() -> None:
    """Count one operation; raise past the operations or the deadline of the render."""
    _current().tick()


# -- weights ---------------------------------------------------------------------------------


def weight(value: object, limit: int = MAX_SIZE, *, magnitudes: bool = False) -> int:
    """Return how big ``value`` is (characters, items, digits), counting at most to ``limit + 1``.

    Containers count every item they refer to (shared references included), so a list holding
    the same list twice weighs twice as much: what ``str()`` of it would cost. With
    ``magnitudes``, an int counts its value instead of its digits (it may be a width or count).
    """
    kind = type(value)
    if kind is str or kind is bytes:  # the common case, without the walk
        return min(max(1, len(cast("str", value))), limit + 1)
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        total += _magnitude(item) if magnitudes else _own_weight(item)
        if total > limit:
            return limit + 1
        kind = type(item)
        if kind is dict or (kind not in _SCALARS and isinstance(item, dict)):
            stack.extend(cast("dict[object, object]", item).keys())
            stack.extend(cast("dict[object, object]", item).values())
        elif kind in _CONTAINERS:
            stack.extend(cast("Iterable[object]", item))
    return total


# Only these are looked into (exact types: a subclass may iterate in ways of its own); anything
# else (Undefined, a loop, a macro) counts as one.
_CONTAINERS = frozenset(
    {list, tuple, set, frozenset, type({}.keys()), type({}.values()), type({}.items())}
)
_SCALARS = frozenset({str, bytes, int, float, bool, type(None), range})


def _own_weight(item: object) -> int:
    kind = type(item)
    if kind is str or kind is bytes or kind is range:
        return max(1, len(cast("str", item)))
    if kind is int:
        return cast("int", item).bit_length() // 3 + 1
    if isinstance(item, str | bytes):  # a subclass: Markup
        return max(1, len(item))
    if isinstance(item, int) and not isinstance(item, bool):
        return item.bit_length() // 3 + 1
    return 1


def _magnitude(item: object) -> int:
    if isinstance(item, int) and not isinstance(item, bool):
        return max(1, min(abs(item), MAX_WORK + 1))
    return _own_weight(item)


def _argument_weight(value: object) -> int:
    """An int in an argument counts as its value, however deep: ``'{0[0]:{0[1]}}'.format(
    ['x', 10**9])`` and ``'%*s' % (10**9, 'x')`` take their widths from inside a sequence."""
    return weight(value, MAX_WORK, magnitudes=True)


def format_weight(value: str) -> int:
    """A format string counts its widths too: ``'%1000000s'`` makes a million characters."""
    numbers = (int(digits) if len(digits) < 10 else MAX_WORK for digits in _DIGITS.findall(value))
    return len(value) + sum(numbers)


def check_size(value: object, what: str) -> None:
    if weight(value) > MAX_SIZE:
        raise TemplateLimitError("too_large", f"{what} would be larger than {MAX_SIZE}")


def check_work(receiver: int, arguments: Iterable[object], what: str) -> None:
    work = receiver * (1 + sum(_argument_weight(argument) for argument in arguments))
    if work > MAX_WORK:
        raise TemplateLimitError("too_large", f"{what} would do more than {MAX_WORK} of work")


def materialized(value: object) -> object:
    """Return an iterator's items as a list (counted and bounded), anything else as it is."""
    if type(value) in _SCALARS or type(value) in _CONTAINERS or not isinstance(value, Iterator):
        return value
    items: list[object] = []
    total = 0
    for item in value:
        tick()
        total += weight(item)
        if total > MAX_SIZE:
            raise TemplateLimitError("too_large", f"a sequence would be larger than {MAX_SIZE}")
        items.append(item)
    return items


def receiver_weight(function: object) -> int:
    """Return the weight of what a bound method works on (1 for a plain function)."""
    wrapped = getattr(function, "__wrapped__", function)  # the sandbox wraps str.format
    receiver = getattr(wrapped, "__self__", None)
    if isinstance(receiver, str) and getattr(function, "__name__", "") in ("format", "format_map"):
        return format_weight(receiver)
    if receiver is None or isinstance(receiver, type) or callable(receiver):
        return 1
    return weight(receiver, MAX_WORK)


def check_binop(operator: str, left: object, right: object) -> None:
    if operator == "*":
        _check_repeat(left, right)
    elif operator == "**":
        _check_power(left, right)
    elif operator == "+" and not _is_number(left):
        if weight(left) + weight(right) > MAX_SIZE:
            raise TemplateLimitError("too_large", f"'+' would make more than {MAX_SIZE}")
    elif operator == "%" and isinstance(left, str):
        check_work(format_weight(left), [right], "'%' formatting")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_repeat(left: object, right: object) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError("too_large", f"'*' would pass {MAX_INT_BITS} bits")
        return
    count, sequence = (left, right) if isinstance(left, int) else (right, left)
    if not isinstance(count, int) or _is_number(sequence):
        return
    if weight(sequence) * max(count, 0) > MAX_SIZE:
        raise TemplateLimitError("too_large", f"'*' would make more than {MAX_SIZE}")


def _check_power(base: object, exponent: object) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) < 2:
        return  # floats overflow with an error of their own; 0, 1 and -1 stay small
    if exponent > 0 and base.bit_length() * exponent > MAX_INT_BITS:
        raise TemplateLimitError("too_large", f"'**' would pass {MAX_INT_BITS} bits")


def bounded_range(*args: int) -> range:
    """``range()`` of at most MAX_RANGE items."""
    tick()
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimitError(
            "range_too_long", f"range() of {len(numbers)} items, more than {MAX_RANGE}"
        )
    return numbers


def failure_reason(exc: BaseException) -> str:
    """Return a short, bounded name for why a template failed (a metric label)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    if isinstance(exc, SecurityError):
        return "unsafe"
    if isinstance(exc, UndefinedError):
        return "undefined"
    return "error"
