"""docs/operations.md and poller.observe.metrics cannot drift apart: same names, same labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from poller.observe import metrics

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
NAME = re.compile(r"\bpoller_[a-z0-9_]+")
# One row of the metrics table: | `poller_name` | type | labels | meaning |
ROW = re.compile(r"^\|\s*`(poller_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", re.MULTILINE)

SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("", "_bucket", "_sum", "_count", "_created"),
}


def _metrics() -> dict[str, MetricWrapperBase]:
    """Every metric object of poller.observe.metrics that is registered in its REGISTRY."""
    registered = set(metrics.REGISTRY._names_to_collectors.values())
    found = {
        value._name: value
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase) and value in registered
    }
    assert found, "poller.observe.metrics defines no metric on REGISTRY"
    return found


def _kind(metric: MetricWrapperBase) -> str:
    for cls, kind in ((Counter, "counter"), (Gauge, "gauge"), (Histogram, "histogram")):
        if isinstance(metric, cls):
            return kind
    raise AssertionError(f"{metric._name}: a metric type the docs do not cover")


def _exposed_name(name: str, kind: str) -> str:
    """The name a PromQL query uses: counters are exposed with ``_total``."""
    return name + "_total" if kind == "counter" else name


@pytest.fixture(scope="module")
def text() -> str:
    return OPERATIONS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def rows(text: str) -> dict[str, tuple[str, set[str]]]:
    table: dict[str, tuple[str, set[str]]] = {}
    for name, kind, labels in ROW.findall(text):
        assert name not in table, f"{name} has two rows in the metrics table"
        table[name] = (kind.lower(), set(re.findall(r"`([a-z_]+)`", labels)))
    return table


def test_every_registered_metric_has_a_row_with_its_type_and_labels(
    rows: dict[str, tuple[str, set[str]]],
) -> None:
    for name, metric in _metrics().items():
        kind = _kind(metric)
        exposed = _exposed_name(name, kind)
        assert exposed in rows, f"docs/operations.md has no metrics-table row for {exposed}"
        documented_kind, documented_labels = rows[exposed]
        assert documented_kind == kind, f"{exposed}: documented as {documented_kind}"
        assert documented_labels == set(metric._labelnames), (
            f"{exposed}: documented labels {sorted(documented_labels)}, "
            f"registered {sorted(metric._labelnames)}"
        )


def test_every_poller_name_in_the_docs_is_a_registered_series(text: str) -> None:
    known = {
        name + suffix for name, metric in _metrics().items() for suffix in SUFFIXES[_kind(metric)]
    }
    unknown = sorted(set(NAME.findall(text)) - known)
    assert unknown == [], f"docs/operations.md names metrics that do not exist: {unknown}"


def test_the_metrics_table_has_no_row_without_a_metric(
    rows: dict[str, tuple[str, set[str]]],
) -> None:
    exposed = {_exposed_name(name, _kind(m)) for name, m in _metrics().items()}
    assert sorted(set(rows) - exposed) == []
