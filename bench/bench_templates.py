"""What the bounds cost: a Slack template rendered in the bounded sandbox vs Jinja2's own.

Baseline: the same template in Jinja2's plain ``SandboxedEnvironment`` (what every template ran
in before), rendered in the same process. Three templates: the documented example, a loop over
the interaction's fields, and a plain one-liner. Each is rendered on the sample events; the
bounded one through ``render`` (in the calling thread: the thread hop of the sink is measured
separately, as ``render_in_thread`` against ``render``).

    python bench/bench_templates.py [--quick] [--renders N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, ratio_line, table

from poller.sinks.slack_template import MAX_OUTPUT, sample_events, template_variables
from poller.sinks.templates import compile_template, render, render_in_thread

TEMPLATES = {
    "documented example": (
        "*{{ title }}* in `{{ session_sid }}`{% if body %}: {{ body }}{% endif %}\n"
        "{% if changes %}{% for field, values in changes.items() %}• {{ field }}: "
        "{{ values[0] }} → {{ values[1] }}\n{% endfor %}{% endif %}<!here>"
    ),
    "loop over fields": (
        "{% for key, value in interaction.items()|sort %}{{ key|upper }}={{ value|string|"
        "truncate(40) }}{% if not loop.last %}, {% endif %}{% endfor %}"
    ),
    "one-liner": "{{ title }}: {{ body }}",
}


def _per_render(function: Callable[[], object], renders: int) -> float:
    """Mean microseconds of one call, over ``renders`` calls after a warm-up."""
    for _ in range(max(10, renders // 10)):
        function()
    start = time.perf_counter()
    for _ in range(renders):
        function()
    return (time.perf_counter() - start) / renders * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer renders (a smoke run)")
    parser.add_argument("--renders", type=int, default=5_000)
    args = parser.parse_args()
    renders = 300 if args.quick else args.renders
    plain = SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)
    variables = [template_variables(event, include_data=True) for event in sample_events()]
    print(machine())
    rows: list[tuple[str, float, float]] = []

    def _measure(baseline: jinja2.Template, bounded: jinja2.Template) -> tuple[float, float]:
        """Microseconds per render: the plain sandbox, then the bounded one."""
        plain_us = _per_render(lambda: [baseline.render(v) for v in variables], renders)
        bounded_us = _per_render(
            lambda: [render(bounded, v, max_output=MAX_OUTPUT) for v in variables], renders
        )
        return plain_us / len(variables), bounded_us / len(variables)

    for name, source in TEMPLATES.items():
        rows.append((name, *_measure(plain.from_string(source), compile_template(source))))
    print(table(rows, ["template", "plain sandbox µs/render", "bounded µs/render"]))
    for name, baseline, bounded in rows:
        print(ratio_line(f"bounded/plain {name}", bounded / baseline))
    hop = _thread_hop(compile_template(TEMPLATES["documented example"]), variables[1], renders)
    print(ratio_line("render_in_thread/render documented example", hop))


def _thread_hop(template: jinja2.Template, variables: dict[str, object], renders: int) -> float:
    """How much the worker thread adds to one render, as the sink renders."""

    async def in_thread() -> float:
        start = time.perf_counter()
        for _ in range(renders):
            await render_in_thread(template, variables, max_output=MAX_OUTPUT)
        return time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(renders):
        render(template, variables, max_output=MAX_OUTPUT)
    direct = time.perf_counter() - start
    return asyncio.run(in_thread()) / direct


if __name__ == "__main__":
    main()
