"""deploy/grafana/dashboard.json: it loads, has its variables, every panel queries Prometheus
through them with PromQL that promtool parses, and the panels the issue asks for are there."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import metric_names, promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What the operator's view shows (issue #14): one series each at least.
SHOWN = {
    "poller_polls_total",
    "poller_poll_duration_seconds_bucket",
    "poller_twilio_requests_total",
    "poller_twilio_rate_limited_total",
    "poller_events_total",
    "poller_deliveries_total",
    "poller_outbox_pending",
    "poller_outbox_oldest_age_seconds",
    "poller_dead_letters",
    "poller_sink_disabled",
    "poller_sink_rate_limited_total",
    "poller_service_last_success_timestamp_seconds",
    "poller_baseline_pending_sessions",
    "poller_leases_held",
    "poller_lease_changes_total",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in dashboard["templating"]["list"]}


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_has_a_recent_schema_and_a_uid(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] == "twilio-proxy-poller"


def test_datasource_and_instance_are_template_variables(dashboard: dict[str, Any]) -> None:
    variables = _variables(dashboard)
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"] == DATASOURCE
    assert instance["definition"] == "label_values(poller_watched_sessions, instance)"
    assert instance["includeAll"] and instance["multi"]


def test_every_panel_has_a_unique_id_and_queries_through_the_variables(
    dashboard: dict[str, Any],
) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert 'instance=~"$instance"' in target["expr"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_no_two_panels_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_the_panels_show_what_the_operator_needs(dashboard: dict[str, Any]) -> None:
    read = {name for expr in _exprs(dashboard) for name in metric_names(expr)}
    assert sorted(SHOWN - read) == []


def test_promtool_parses_every_panel_query(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each query, its Grafana variables replaced, is a valid recording rule for promtool."""
    exprs = _exprs(dashboard)
    result = _check_as_rules(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    """The parse check above is able to fail."""
    result = _check_as_rules(["sum by (sink (poller_dead_letters)"], tmp_path)
    assert result.returncode != 0


def _check_as_rules(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check rules`` on the queries as recording rules."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": _as_promql(expr)} for n, expr in enumerate(exprs)
    ]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _as_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
