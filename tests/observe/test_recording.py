"""A process that serves no metrics (``poller once``) records none and never imports
prometheus_client; every other process records as before."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

# Runs in a fresh interpreter: the metrics module is imported once per process.
PROBE = """
import json, sys
from poller.observe.recording import stop_recording
if sys.argv[1] == "stop":
    stop_recording()
from poller.observe import metrics
metrics.TWILIO_REQUESTS.labels(status="200").inc()
metrics.POLL_DURATION.observe(0.5)
metrics.OUTBOX_PENDING.labels(sink="ops").set(3)
metrics.LAST_SERVICE_SUCCESS.labels(service_sid="KS1").set(1.0)
metrics.LAST_SERVICE_SUCCESS.remove("KS1")
metrics.CLOCK_STEPS.inc()
metrics.WATCHED_SESSIONS.dec()
if sys.argv[1] == "late":
    stop_recording()  # too late: the metrics are real, and keep recording
    metrics.CLOCK_STEPS.inc()
registry = metrics.REGISTRY
print(json.dumps({
    "prometheus_client": "prometheus_client" in sys.modules,
    "kind": type(metrics.TWILIO_REQUESTS).__name__,
    "requests": registry and registry.get_sample_value(
        "poller_twilio_requests_total", {"status": "200"}
    ),
    "steps": registry and registry.get_sample_value("poller_clock_steps_total"),
}))
"""


def _probe(mode: str) -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(run.stdout)
    return result


def test_a_process_that_serves_no_metrics_records_none_and_imports_no_prometheus() -> None:
    assert _probe("stop") == {
        "prometheus_client": False,
        "kind": "Unrecorded",
        "requests": None,
        "steps": None,
    }


def test_every_other_process_records_into_prometheus_metrics() -> None:
    assert _probe("record") == {
        "prometheus_client": True,
        "kind": "Counter",
        "requests": 1.0,
        "steps": 1.0,
    }


def test_stopping_after_the_metrics_were_imported_changes_nothing() -> None:
    assert _probe("late") == {
        "prometheus_client": True,
        "kind": "Counter",
        "requests": 1.0,
        "steps": 2.0,
    }
