"""Metric names in PromQL and in a ``/metrics`` exposition, for the rule and dashboard checks.

Not a PromQL parser: it removes what cannot hold a metric name (strings, label matchers, range
and subquery brackets, the label lists of ``by``/``on``/...), then takes every identifier not
followed by ``(`` (a function or an aggregation) that is not a keyword. That is enough to find
each metric a rule or a panel reads, and strict enough that a misspelt one is reported.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{[^{}]*\}")
RANGES = re.compile(r"\[[^\[\]]*\]")
LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
# An identifier starts where no word character, ':' or '$' (a Grafana variable) precedes it,
# so the "m" of "10m" and the "instance" of "$instance" are not taken for names.
IDENTIFIER = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
)
# Series Prometheus itself adds to every scrape, never exposed by the target.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

REQUIRE_ENV = "POLLER_TEST_REQUIRE_PROMTOOL"

TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)[{ ]", re.MULTILINE)


def metric_names(expr: str) -> set[str]:
    """Return the metric names ``expr`` reads."""
    text = STRINGS.sub('""', expr)
    text = LABEL_LISTS.sub(" ", text)
    while True:  # nested brackets: innermost first
        stripped = RANGES.sub(" ", MATCHERS.sub(" ", text))
        if stripped == text:
            break
        text = stripped
    return {name for name in IDENTIFIER.findall(text) if name.lower() not in KEYWORDS}


def exposed_names(exposition: str) -> set[str]:
    """Return every series name a query may use against this ``/metrics`` text.

    Families without a sample yet still have their ``# TYPE`` line: a counter is queried as
    ``_total``, a histogram as ``_bucket``, ``_sum`` and ``_count``.
    """
    names = set(SAMPLE_LINE.findall(exposition))
    for name, kind in TYPE_LINE.findall(exposition):
        if kind == "counter":
            names.add(name if name.endswith("_total") else name + "_total")
        elif kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names


def promtool() -> str:
    """Return promtool's path; skip saying why when it is missing (fail where it is required)."""
    found = shutil.which("promtool")
    if found is not None:
        return found
    reason = "promtool is not installed (Debian: apt-get install prometheus)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"promtool is required here ({REQUIRE_ENV}=1) but {reason}")
    pytest.skip(reason)
