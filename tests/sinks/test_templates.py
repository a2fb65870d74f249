"""The bounded template sandbox: what it refuses, what it still renders, and how it stops."""

from __future__ import annotations

import asyncio

import jinja2
import pytest
from jinja2.exceptions import SecurityError

from poller.events import Event
from poller.sinks.slack_template import MessageTemplate, sample_events, template_variables
from poller.sinks.template_limits import RENDER_SECONDS
from poller.sinks.templates import (
    MAX_SIZE,
    BoundedEnvironment,
    TemplateLimitError,
    compile_template,
    render,
    render_in_thread,
    weight,
)

NESTED = "{% for i in range(1000) %}{% for j in range(1000) %}{{ body }}{% endfor %}{% endfor %}"
SILENT_LOOPS = (
    "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}"
    "{% endfor %}{% endfor %}{% endfor %}"
)


def _render(source: str, *, seconds: float = RENDER_SECONDS, **variables: object) -> str:
    return render(compile_template(source), variables, max_output=40_000, seconds=seconds)


def _reason(source: str, *, seconds: float = RENDER_SECONDS, **variables: object) -> str:
    with pytest.raises(TemplateLimitError) as caught:
        _render(source, seconds=seconds, **variables)
    return caught.value.reason


# -- nothing runs at compile time ------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 100000 }}",
        "{{ 'x' ~ ('y' * 100000) }}",
        "{{ 'x'|center(100000) }}",
        "{{ [0] * 100000 }}",
        "{{ 7 ** 100000 }}",
    ],
)
def test_constant_expressions_are_not_folded_when_the_template_compiles(source: str) -> None:
    code = BoundedEnvironment().compile(source, raw=True)
    assert len(code) < 10_000  # Jinja2's folding would have written the whole value in it
    assert _reason(source) == "too_large"  # evaluated when rendering, within the bounds


# -- refused constructs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ 'x' * 10**9 }}", "too_large"),
        ("{{ 10**9 * 'x' }}", "too_large"),
        ("{{ [1, 2] * 10**8 }}", "too_large"),
        ("{{ 2 ** 100000 }}", "too_large"),
        ("{{ (2 ** 1000) * (2 ** 1000) }}", "too_large"),
        ("{% set s = 'x' * 40000 %}{{ s + s }}", "too_large"),
        ("{% set s = 'x' * 40000 %}{{ s ~ s }}", "too_large"),
        ("{% set s = 'x' * 40000 %}{{ s.replace('x', s) }}", "too_large"),
        ("{% set s = 'x' * 40000 %}{{ s|replace('x', s) }}", "too_large"),
        ("{% set s = 'x' * 4000 %}{{ s|indent(1000) }}", "too_large"),
        ("{{ 'x'|center(10**7) }}", "too_large"),
        ("{{ 'x'.ljust(10**7) }}", "too_large"),
        ("{{ '%1000000000s' % 'x' }}", "too_large"),
        ("{{ '{:>1000000000}'.format('x') }}", "too_large"),
        ("{{ '%*s' % (10**9, 'x') }}", "too_large"),
        ("{{ '{0[0]:{0[1]}}'.format(['x', 10**9]) }}", "too_large"),
        ("{{ '{:{w}}'.format('x', w=10**9) }}", "too_large"),
        ("{{ '\t'.expandtabs(10**9) }}", "too_large"),
        ("{{ [1]|batch(10**9, 'x')|list }}", "too_large"),
        ("{{ range(1000)|map('center', 2000)|join }}", "too_large"),
        ("{{ {}.fromkeys(range(1000), 'x' * 40000) }}", "too_large"),
        ("{{ '%s'|format('x' * 40000) * 2 }}", "too_large"),
        ("{% set a = ['x' * 40000] %}{{ [a, a] }}", "too_large"),
        ("{% set a = ['x' * 30000] %}{{ (a, a) }}", "too_large"),
        ("{% set a = 'x' * 30000 %}{{ {'a': a, 'b': a} }}", "too_large"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(60) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "too_large",
        ),
        (
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}{{ 'x' * 30000 }}"
            "{% endif %}{% endmacro %}{{ f(40) }}",
            "too_large",
        ),
        ("{% set a %}{{ 'x' * 30000 }}{{ 'x' * 30000 }}{% endset %}{{ a }}", "too_large"),
        ("{{ range(100000)|list }}", "range_too_long"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}",
            "range_too_long",
        ),
        ("{{ range(0, 10**9, 2)|length }}", "range_too_long"),
        (NESTED, "output_too_long"),
        (
            "{% for i in range(1000) %}{% set a %}{% for j in range(1000) %}{{ 'x' * 100 }}"
            "{% endfor %}{% endset %}{% endfor %}",
            "output_too_long",
        ),
        (SILENT_LOOPS, "too_many_operations"),
    ],
)
def test_sandbox_refuses_what_can_blow_up(source: str, reason: str) -> None:
    # The operation count is a bound of its own: on a busy machine, or under coverage's tracer,
    # the time bound must not be met first.
    seconds = 120.0 if reason == "too_many_operations" else RENDER_SECONDS
    assert _reason(source, seconds=seconds, body="hello") == reason


def test_runaway_recursion_is_an_ordinary_error() -> None:
    with pytest.raises(RecursionError):
        _render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")


def test_lipsum_is_not_offered() -> None:
    with pytest.raises(jinja2.UndefinedError):
        _render("{{ lipsum(10**6) }}")


def test_unsafe_attributes_and_mutation_stay_refused() -> None:
    with pytest.raises(SecurityError):
        _render("{{ ''.__class__.__mro__ }}")
    with pytest.raises(SecurityError):
        _render("{{ items.append(1) }}", items=[])


def test_template_code_runs_only_inside_a_render() -> None:
    with pytest.raises(TemplateLimitError, match="outside a render"):
        "".join(compile_template("{{ 1 + 1 }}").generate())


# -- what still works ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ range(4)|join(', ') }}", "0, 1, 2, 3"),
        ("{{ [1, 2]|map('string')|join('-') }}", "1-2"),
        (
            "{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ 7 // 2 }} {{ -3 + 1 }} {{ 'a' ~ 1 }}",
            "ababab 1024 3 -2 a1",
        ),
        ("{{ '%05d'|format(42) }} {{ '{:>4}'.format('x') }} {{ '%s!' % 'hi' }}", "00042    x hi!"),
        (
            "{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }} {{ loop.index }}/{{ loop.length }}"
            "{% endfor %}",
            "a=1 1/1",
        ),
        ("{% set a, b = 1, 2 %}{{ a + b }} {{ (1, 2) }} {{ [3] + [4] }}", "3 (1, 2) [3, 4]"),
        (
            "{% filter upper %}hi {{ 'x' }}{% endfilter %}{% raw %}{{ raw }}{% endraw %}",
            "HI X{{ raw }}",
        ),
        ("{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(1) }}{{ m('y') }}", "<1><y>"),
        (
            "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
            "{% endfor %}{{ ns.n }}",
            "3",
        ),
        (
            "{{ body|truncate(9, leeway=0) }} {{ body|length }} {{ body.upper() }}",
            "hello... 11 HELLO WORLD",
        ),
        ("{{ missing is defined }} {{ body is string }}", "False True"),
    ],
)
def test_ordinary_templates_render_as_in_jinja2(source: str, expected: str) -> None:
    assert _render(source, body="hello world") == expected


def test_documented_example_renders_on_both_sample_events() -> None:
    source = (
        "*{{ title }}* in `{{ session_sid }}`{% if body %}: {{ body }}{% endif %}\n"
        "{% if changes %}{% for field, values in changes.items() %}• {{ field }}: "
        "{{ values[0] }} → {{ values[1] }}\n{% endfor %}{% endif %}<!here>"
    )
    created, updated = sample_events()
    template = compile_template(source)
    assert "Hi! This is a test message" in _variables_render(template, created)
    assert "• outbound_resource_status: sent → delivered" in _variables_render(template, updated)


def _variables_render(template: jinja2.Template, event: Event) -> str:
    variables = template_variables(event, include_data=True)
    return render(template, variables, max_output=40_000)


def test_weight_counts_every_shared_reference() -> None:
    inner = ["x" * 10] * 3
    assert weight(inner) == 1 + 30
    assert weight([inner, inner]) == 1 + 2 * (1 + 30)
    assert weight([inner] * 10_000) == MAX_SIZE + 1  # counting stops past the limit


# -- time, output and the event loop ---------------------------------------------------------


def test_a_slow_template_stops_at_its_deadline() -> None:
    with pytest.raises(TemplateLimitError) as caught:
        render(compile_template(SILENT_LOOPS), {}, max_output=100, seconds=0.2, operations=10**12)
    assert caught.value.reason == "too_slow"


def test_rendering_stops_once_the_output_passes_its_cap() -> None:
    # Were the output not cut at 100 characters, the 5,000 operations would run out first.
    with pytest.raises(TemplateLimitError) as caught:
        render(compile_template(NESTED), {"body": "x"}, max_output=100, operations=5_000)
    assert caught.value.reason == "output_too_long"


async def test_the_event_loop_keeps_running_while_a_template_renders() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    running = asyncio.create_task(ticker())
    try:
        with pytest.raises(TemplateLimitError, match="ran out of time"):
            await render_in_thread(
                compile_template(SILENT_LOOPS), {}, max_output=100, seconds=0.5, operations=10**12
            )
    finally:
        running.cancel()
    assert ticks >= 10  # a render on the loop itself would have let it tick at most once


# -- the load-time check ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'x' * 10**9 }}", r"interaction\.created event it failed \(too_large\)"),
        ("{% for i in range(100000) %}{% endfor %}", r"\(range_too_long\)"),
        ("{{ ''.__class__.__mro__ }}", r"\(unsafe\)"),
        ("{{ nope }}", r"\(undefined\): 'nope' is undefined"),
        ("{% if false %}x{% endif %}", r"\(empty\)"),
    ],
)
def test_check_refuses_what_never_renders_or_hits_a_bound(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        MessageTemplate(source).check()
    assert "\n" not in str(caught.value)


def test_check_accepts_a_template_that_renders_for_some_event_types() -> None:
    MessageTemplate("{% for field in changes %}{{ field }}{% endfor %}").check()
    MessageTemplate("{{ body|upper }}").check()
