"""The one sandbox every user template runs in: Jinja2's, with bounds on size, work and time.

A template comes from the config, so it is trusted not to read secrets (Jinja2's sandbox sees
to that) but not to be small: ``{{ 'x' * 10**9 }}`` or three nested loops must neither eat the
memory nor stop the daemon. The bounds, and where each is enforced:

    nothing runs at compile time   no constant folding (the optimizer is off, and the code
                                   generator never evaluates an output expression early)
    every value stays small        what an operator, call, filter, ``~``, literal or
                                   ``{{ }}`` makes weighs at most MAX_SIZE (characters, items;
                                   an int counts its digits), checked before the work when the
                                   size can be known (``*``, ``**``, ``+``, ``~``) and after
    no call amplifies unbounded    a call or filter may do at most MAX_WORK: the weight of
                                   its input times one plus its arguments' (an int argument
                                   counts its value: ``center(10**6)``)
    ranges are short               ``range()`` of at most MAX_RANGE items
    work and time are bounded      every operator, call, attribute, filter and loop iteration
                                   counts against MAX_OPERATIONS and a deadline
    output is bounded              rendering stops once the output passes its cap

Rendering happens in a worker thread (:func:`render_in_thread`), so the event loop keeps
serving while a template runs; the deadline is checked inside the sandbox, so the render
itself stops too. A bound that is hit raises :class:`TemplateLimitError` with a ``reason``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MappingView
from dataclasses import dataclass, field
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SIZE = 50_000
MAX_WORK = 2_000_000
MAX_RANGE = 1_000
MAX_INT_BITS = 1_024
MAX_OPERATIONS = 1_000_000
# All text produced in one render, captured ({% set %} blocks, macros) or not.
MAX_EMITTED = 400_000
RENDER_SECONDS = 2.0

_EMIT = "poller emit"  # internal filters: a space makes them impossible to name in a template
_ITERATE = "poller iterate"
_CONCAT = "poller concat"
_SIZED = "poller sized"
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
    clock: Callable[[], float] = field(default=time.monotonic)

    def tick(self) -> None:
        self.operations -= 1
        if self.operations < 0:
            raise TemplateLimitError("too_many_operations", "the template did too much work")
        if self.clock() > self.deadline:
            raise TemplateLimitError("too_slow", "the template ran out of time")


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("template_budget")


def _tick() -> None:
    budget = _BUDGET.get(None)
    if budget is None:  # only render() evaluates templates; anything else is refused
        raise TemplateLimitError("not_rendering", "template code ran outside a render")
    budget.tick()


# -- weights ---------------------------------------------------------------------------------


def weight(value: object, limit: int = MAX_SIZE) -> int:
    """Return how big ``value`` is (characters, items, digits), counting at most to ``limit + 1``.

    Containers count every item they refer to (shared references included), so a list holding
    the same list twice weighs twice as much: what ``str()`` of it would cost.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        total += _own_weight(item)
        if total > limit:
            return limit + 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, _CONTAINERS):
            stack.extend(cast("Iterable[object]", item))
    return total


# Only these are looked into: anything else (Undefined, a loop, a macro) counts as one.
_CONTAINERS = (list, tuple, set, frozenset, MappingView)


def _own_weight(item: object) -> int:
    if isinstance(item, str | bytes | range):
        return max(1, len(item))
    if isinstance(item, bool) or not isinstance(item, int):
        return 1
    return item.bit_length() // 3 + 1


def _argument_weight(value: object) -> int:
    """An int argument counts as its value: it may be a width or a count."""
    if isinstance(value, int) and not isinstance(value, bool):
        return min(abs(value), MAX_WORK + 1)
    return weight(value, MAX_WORK)


def _format_weight(value: str) -> int:
    """A format string counts its widths too: ``'%1000000s'`` makes a million characters."""
    numbers = (int(digits) if len(digits) < 10 else MAX_WORK for digits in _DIGITS.findall(value))
    return len(value) + sum(numbers)


def _check_size(value: object, what: str) -> None:
    if weight(value) > MAX_SIZE:
        raise TemplateLimitError("too_large", f"{what} would be larger than {MAX_SIZE}")


def _check_work(receiver: int, arguments: Iterable[object], what: str) -> None:
    work = receiver * (1 + sum(_argument_weight(argument) for argument in arguments))
    if work > MAX_WORK:
        raise TemplateLimitError("too_large", f"{what} would do more than {MAX_WORK} of work")


def _materialized(value: object) -> object:
    """Return an iterator's items as a list (counted and bounded), anything else as it is."""
    if not isinstance(value, Iterator):
        return value
    items: list[object] = []
    total = 0
    for item in value:
        _tick()
        total += weight(item)
        if total > MAX_SIZE:
            raise TemplateLimitError("too_large", f"a sequence would be larger than {MAX_SIZE}")
        items.append(item)
    return items


# -- the environment -------------------------------------------------------------------------


class _EagerCodeGenerator(CodeGenerator):
    """Never evaluate an output expression at compile time (Jinja2 folds constants there)."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if isinstance(node, nodes.TemplateData):
            return super()._output_child_to_const(node, frame, finalize)
        raise nodes.Impossible()


class BoundedTemplate(jinja2.Template):
    """A template whose ``render()`` keeps the bounds (with the default time and work)."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        return render(self, dict(*args, **kwargs), max_output=MAX_EMITTED)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with the bounds of this module on everything a template does.

    Undefined variables are errors (``StrictUndefined``); output is not HTML-escaped (callers
    escape the variables for their own markup).
    """

    code_generator_class = _EagerCodeGenerator
    template_class = BoundedTemplate
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self) -> None:
        super().__init__(autoescape=False, undefined=jinja2.StrictUndefined, optimized=False)
        self.globals["range"] = bounded_range
        self.globals.pop("lipsum", None)
        for table in (self.filters, self.tests):
            for name, function in list(table.items()):
                table[name] = _guarded(name, function)
        self.filters.update({_EMIT: _emit, _ITERATE: _iterate, _CONCAT: _concat, _SIZED: _sized})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        _bound_tree(tree)
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        result = self.binop_table[operator](left, right)
        _check_size(result, f"the result of {operator!r}")
        return result

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        _tick()
        return self.unop_table[operator](arg)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        args = tuple(_materialized(argument) for argument in args)
        kwargs = {key: _materialized(value) for key, value in kwargs.items()}
        # A macro's own work is counted as it runs; range() has a bound of its own.
        if not isinstance(__obj, Macro) and __obj is not bounded_range:
            _check_work(_receiver_weight(__obj), (*args, *kwargs.values()), "a call")
        result = super().call(__context, __obj, *args, **kwargs)
        _check_size(result, "the result of a call")
        return result


def _receiver_weight(function: object) -> int:
    """Return the weight of what a bound method works on (1 for a plain function)."""
    wrapped = getattr(function, "__wrapped__", function)  # the sandbox wraps str.format
    receiver = getattr(wrapped, "__self__", None)
    if isinstance(receiver, str) and getattr(function, "__name__", "") in ("format", "format_map"):
        return _format_weight(receiver)
    if receiver is None or isinstance(receiver, type) or callable(receiver):
        return 1
    return weight(receiver, MAX_WORK)


def _check_binop(operator: str, left: object, right: object) -> None:
    if operator == "*":
        _check_repeat(left, right)
    elif operator == "**":
        _check_power(left, right)
    elif operator == "+" and not _is_number(left):
        if weight(left) + weight(right) > MAX_SIZE:
            raise TemplateLimitError("too_large", f"'+' would make more than {MAX_SIZE}")
    elif operator == "%" and isinstance(left, str):
        _check_work(_format_weight(left), [right], "'%' formatting")


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
    _tick()
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateLimitError(
            "range_too_long", f"range() of {len(numbers)} items, more than {MAX_RANGE}"
        )
    return numbers


def _guarded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter or test: counted, its work bounded, its result small."""
    passed = getattr(function, "jinja_pass_arg", None)
    skip = 0 if passed is None else 1  # the context, eval context or environment comes first

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        args = tuple(_materialized(argument) for argument in args)
        kwargs = {key: _materialized(value) for key, value in kwargs.items()}
        value, rest = args[skip : skip + 1], (*args[skip + 1 :], *kwargs.values())
        receiver = weight(value[0], MAX_WORK) if value else 1
        if name == "format" and value and isinstance(value[0], str):
            receiver = _format_weight(value[0])
        _check_work(receiver, rest, f"|{name}")
        result = function(*args, **kwargs)
        _check_size(result, f"the result of |{name}")
        return result

    return guarded


# -- what the tree rewrite adds ---------------------------------------------------------------


def _emit(value: Any) -> Any:
    """Every piece of output, captured or not: small, and counted against MAX_EMITTED."""
    _tick()
    size = weight(value)
    if size > MAX_SIZE:
        raise TemplateLimitError("too_large", f"an output value would be larger than {MAX_SIZE}")
    budget = _BUDGET.get()
    budget.emitted += size
    if budget.emitted > MAX_EMITTED:
        raise TemplateLimitError("output_too_long", f"the template wrote more than {MAX_EMITTED}")
    return value


def _iterate(iterable: Any) -> Iterator[Any]:
    """Count every loop iteration (a loop with an empty body still takes time)."""
    for item in iterable:
        _tick()
        yield item


def _concat(parts: tuple[Any, ...]) -> str:
    _tick()
    if sum(weight(part) for part in parts) > MAX_SIZE:
        raise TemplateLimitError("too_large", f"'~' would make more than {MAX_SIZE} characters")
    return "".join(str(part) for part in parts)


def _sized(value: Any) -> Any:
    _tick()
    _check_size(value, "a literal")
    return value


def _bound_tree(tree: nodes.Node) -> None:
    """Route output, loops, ``~`` and literals of ``tree`` through the counting filters."""
    for node in list(tree.find_all((nodes.Output, nodes.For))):
        if isinstance(node, nodes.Output):
            node.nodes = [_wrap(_EMIT, _as_expression(child)) for child in node.nodes]
        elif isinstance(node, nodes.For):
            node.iter = _wrap(_ITERATE, node.iter)
    _rewrite_expressions(tree)


def _as_expression(node: nodes.Expr) -> nodes.Expr:
    if isinstance(node, nodes.TemplateData):
        return nodes.Const(node.data, lineno=node.lineno)
    return node


def _wrap(name: str, node: nodes.Node) -> nodes.Expr:
    return nodes.Filter(cast(nodes.Expr, node), name, [], [], None, None, lineno=node.lineno)


def _rewrite_expressions(node: nodes.Node) -> None:
    """Replace ``a ~ b`` and every list, tuple and dict literal by its counted form."""
    for name, child in node.iter_fields():
        if isinstance(child, list):
            setattr(node, name, [_rewritten(item) for item in child])
        elif isinstance(child, nodes.Node):
            setattr(node, name, _rewritten(child))


def _rewritten(node: Any) -> Any:
    if not isinstance(node, nodes.Node):
        return node
    _rewrite_expressions(node)
    if isinstance(node, nodes.Concat):
        return _wrap(_CONCAT, nodes.Tuple(node.nodes, "load", lineno=node.lineno))
    literal = isinstance(node, nodes.List | nodes.Dict)
    if literal or (isinstance(node, nodes.Tuple) and node.ctx == "load"):
        return _wrap(_SIZED, node)
    return node


# -- rendering -------------------------------------------------------------------------------


_ENVIRONMENT = BoundedEnvironment()


def compile_template(source: str) -> jinja2.Template:
    """Compile ``source`` in the bounded sandbox; raise ``jinja2.TemplateSyntaxError``.

    Nothing of the template is evaluated here, however it is written.
    """
    return _ENVIRONMENT.from_string(source)


def render(
    template: jinja2.Template,
    variables: Mapping[str, Any],
    *,
    max_output: int,
    seconds: float = RENDER_SECONDS,
    operations: int = MAX_OPERATIONS,
) -> str:
    """Render ``template`` within the bounds; raise :class:`TemplateLimitError` past one.

    Rendering stops as soon as the output passes ``max_output`` characters.
    """
    budget = _Budget(deadline=time.monotonic() + seconds, operations=operations)
    token = _BUDGET.set(budget)
    try:
        return _collect(template.generate(variables), max_output)
    finally:
        _BUDGET.reset(token)


def _collect(chunks: Iterator[str], max_output: int) -> str:
    text: list[str] = []
    length = 0
    for chunk in chunks:
        length += len(chunk)
        if length > max_output:
            raise TemplateLimitError(
                "output_too_long", f"the output passed {max_output} characters"
            )
        text.append(chunk)
    return "".join(text)


_WORKERS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="template")


async def render_in_thread(
    template: jinja2.Template,
    variables: Mapping[str, Any],
    *,
    max_output: int,
    seconds: float = RENDER_SECONDS,
    operations: int = MAX_OPERATIONS,
) -> str:
    """:func:`render` in a worker thread: the event loop keeps running meanwhile.

    The render stops itself at its deadline; waiting also gives up a little after it.
    """
    job = functools.partial(
        render, template, variables, max_output=max_output, seconds=seconds, operations=operations
    )
    future = _WORKERS.submit(contextvars.copy_context().run, job)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout=seconds + 1.0)
    except TimeoutError:
        raise TemplateLimitError("too_slow", "the template ran out of time") from None


def failure_reason(exc: BaseException) -> str:
    """Return a short, bounded name for why a template failed (a metric label)."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    if isinstance(exc, SecurityError):
        return "unsafe"
    if isinstance(exc, jinja2.UndefinedError):
        return "undefined"
    return "error"
