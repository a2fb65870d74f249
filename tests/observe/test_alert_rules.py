"""deploy/prometheus: promtool accepts the rules and their unit tests pass, every alert is tested
firing and silent, has its runbook entry, and reads only metrics that ``/metrics`` exposes."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from poller.observe.health import HealthServer, HealthState
from tests.promql import SCRAPE_SERIES, exposed_names, metric_names, promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
RUNBOOK_PREFIX = "docs/operations.md#"


def _alerts() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    [group] = document["groups"]
    assert group["name"] == "twilio-proxy-poller"
    rules: list[dict[str, Any]] = group["rules"]
    return rules


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


@pytest.fixture
async def exposition() -> AsyncIterator[str]:
    """The text of ``/metrics`` of a real HealthServer on a free loopback port."""
    async with (
        HealthServer("127.0.0.1", 0, health=HealthState()) as server,
        httpx.AsyncClient(trust_env=False) as http,
    ):
        answer = await http.get(f"http://127.0.0.1:{server.port}/metrics")
        assert answer.status_code == 200
        yield answer.text


def unknown_names(exprs: list[str], exposed: set[str]) -> list[str]:
    """Return the names the expressions read that are neither exposed nor Prometheus' own."""
    return sorted({n for e in exprs for n in metric_names(e)} - exposed - SCRAPE_SERIES)


def _dashboard_exprs() -> list[str]:
    """Every panel query, and the series of each ``label_values(SERIES, label)`` variable."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        exprs += re.findall(r"label_values\((\w+),", variable.get("definition", ""))
    return exprs


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_fail_when_an_alert_never_fires(tmp_path: Path) -> None:
    """The unit tests are able to fail: with a rule that cannot be true, promtool says so."""
    rules = RULES.read_text(encoding="utf-8").replace(
        "expr: max by (job, instance, sink) (poller_sink_disabled) == 1",
        "expr: max by (job, instance, sink) (poller_sink_disabled) == 2",
    )
    assert rules != RULES.read_text(encoding="utf-8")
    (tmp_path / "alerts.yaml").write_text(rules, encoding="utf-8")
    (tmp_path / "alerts_test.yaml").write_text(RULE_TESTS.read_text(encoding="utf-8"))
    result = _promtool("test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert result.returncode != 0
    assert "PollerSinkDisabled" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert (sorted(names - firing), sorted(names - silent)) == ([], [])


def test_every_alert_has_for_severity_summary_description_and_runbook() -> None:
    for rule in _alerts():
        name = rule["alert"]
        assert "for" in rule, name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert "{{ $labels." in annotations["description"], name
        assert annotations["runbook_url"] == RUNBOOK_PREFIX + name.lower(), name


def test_every_alert_has_its_runbook_entry_in_the_alerts_section() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    entries = re.findall(r"^### (\w+)$", section, re.MULTILINE)
    assert entries == [rule["alert"] for rule in _alerts()]


async def test_every_metric_of_the_rules_and_the_dashboard_is_exposed(exposition: str) -> None:
    exposed = exposed_names(exposition)
    exprs = [rule["expr"] for rule in _alerts()] + _dashboard_exprs()
    assert unknown_names(exprs, exposed) == []
    read = {name for expr in exprs for name in metric_names(expr)}
    assert {"poller_sink_rate_limited_total", "poller_poll_duration_seconds_bucket"} <= read


async def test_the_name_check_reports_a_misspelt_metric(exposition: str) -> None:
    exposed = exposed_names(exposition)
    good = 'sum by (sink) (rate(poller_deliveries_total{outcome="dead"}[5m])) > 0 and up'
    assert unknown_names([good], exposed) == []
    typos = [
        "rate(poller_deliverys_total[5m])",
        "poller_outbox_pending_total > 0",  # a gauge has no _total
        "sum(poller_polls)",  # a counter is queried with _total
        "histogram_quantile(0.9, rate(poller_poll_duration_seconds[5m]))",
    ]
    assert [unknown_names([typo], exposed) for typo in typos] == [
        ["poller_deliverys_total"],
        ["poller_outbox_pending_total"],
        ["poller_polls"],
        ["poller_poll_duration_seconds"],
    ]


def test_metric_names_skips_functions_keywords_labels_and_variables() -> None:
    expr = (
        'time() - max by (job, le) (x_seconds{a="b(c)", instance=~"$instance"}[$__rate_interval])'
        " > on (job) group_left () (5 * max without (sink) (y offset 10m)) unless bool z"
    )
    assert metric_names(expr) == {"x_seconds", "y", "z"}
