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
itself stops too. A bound that is hit raises :class:`TemplateLimitError` with a ``reason``;
the bounds and how they are counted live in :mod:`poller.sinks.template_limits`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from poller.sinks.template_limits import (
    MAX_EMITTED,
    MAX_OPERATIONS,
    MAX_SIZE,
    MAX_WORK,
    RENDER_SECONDS,
    TemplateLimitError,
    bounded_range,
    budget,
    check_binop,
    check_size,
    check_work,
    count_output,
    failure_reason,
    format_weight,
    materialized,
    receiver_weight,
    tick,
    weight,
)

__all__ = [
    "MAX_SIZE",
    "RENDER_SECONDS",
    "BoundedEnvironment",
    "TemplateLimitError",
    "compile_template",
    "failure_reason",
    "render",
    "render_in_thread",
    "weight",
]

_EMIT = "poller emit"  # internal filters: a space makes them impossible to name in a template
_ITERATE = "poller iterate"
_CONCAT = "poller concat"
_SIZED = "poller sized"


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
        tick()
        check_binop(operator, left, right)
        result = self.binop_table[operator](left, right)
        check_size(result, f"the result of {operator!r}")
        return result

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        tick()
        return self.unop_table[operator](arg)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        args = tuple(materialized(argument) for argument in args)
        kwargs = {key: materialized(value) for key, value in kwargs.items()}
        # A macro's own work is counted as it runs; range() has a bound of its own.
        if not isinstance(__obj, Macro) and __obj is not bounded_range:
            check_work(receiver_weight(__obj), (*args, *kwargs.values()), "a call")
        result = super().call(__context, __obj, *args, **kwargs)
        check_size(result, "the result of a call")
        return result


def _guarded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter or test: counted, its work bounded, its result small."""
    passed = getattr(function, "jinja_pass_arg", None)
    skip = 0 if passed is None else 1  # the context, eval context or environment comes first

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        tick()
        args = tuple(materialized(argument) for argument in args)
        kwargs = {key: materialized(value) for key, value in kwargs.items()}
        value, rest = args[skip : skip + 1], (*args[skip + 1 :], *kwargs.values())
        receiver = weight(value[0], MAX_WORK) if value else 1
        if name == "format" and value and isinstance(value[0], str):
            receiver = format_weight(value[0])
        check_work(receiver, rest, f"|{name}")
        result = function(*args, **kwargs)
        check_size(result, f"the result of |{name}")
        return result

    return guarded


# -- what the tree rewrite adds ---------------------------------------------------------------


def _emit(value: Any) -> Any:
    """Every piece of output, captured or not: small, and counted against MAX_EMITTED."""
    tick()
    size = weight(value)
    if size > MAX_SIZE:
        raise TemplateLimitError("too_large", f"an output value would be larger than {MAX_SIZE}")
    count_output(size)
    return value


def _iterate(iterable: Any) -> Iterator[Any]:
    """Count every loop iteration (a loop with an empty body still takes time)."""
    for item in iterable:
        tick()
        yield item


def _concat(parts: tuple[Any, ...]) -> str:
    tick()
    if sum(weight(part) for part in parts) > MAX_SIZE:
        raise TemplateLimitError("too_large", f"'~' would make more than {MAX_SIZE} characters")
    return "".join(str(part) for part in parts)


def _sized(value: Any) -> Any:
    tick()
    check_size(value, "a literal")
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
    with budget(seconds, operations):
        return _collect(template.generate(variables), max_output)


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
