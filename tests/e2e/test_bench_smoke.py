"""Smoke runs of the quick benchmarks: each runs to the end and prints its ratio lines.

Only ``bench_state``, ``bench_delivery``, ``bench_startup``, ``bench_history`` and
``bench_status`` run here (seconds each); ``bench_scale`` and ``bench_fullscan`` take minutes
and are run by hand (docs/benchmarks.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench"
RATIO = re.compile(r"^ratio (?P<name>[^:]+): (?P<value>\d+\.\d{3})x", re.MULTILINE)


def _run_quick(script: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _ratios(output: str) -> dict[str, float]:
    return {m["name"]: float(m["value"]) for m in RATIO.finditer(output)}


def test_bench_state_quick_prints_the_commit_cost_ratios() -> None:
    ratios = _ratios(_run_quick("bench_state.py"))
    assert {"1 changed/unchanged commit", "100 changed/unchanged commit"} <= set(ratios)
    assert any(name.startswith("unchanged commit p50") for name in ratios)
    assert all(value > 0 for value in ratios.values())


def test_bench_delivery_quick_delivers_everything_and_prints_its_ratio() -> None:
    output = _run_quick("bench_delivery.py")
    ratios = _ratios(output)
    assert ratios["dispatcher/bare events per second"] > 0
    assert "outbox pending after: 0" in output


def test_bench_startup_quick_prints_both_start_up_ratios() -> None:
    ratios = _ratios(_run_quick("bench_startup.py"))
    assert {
        "check-config/bare interpreter cpu",
        "once to first request/bare interpreter cpu",
    } <= set(ratios)
    assert all(value > 1 for value in ratios.values())  # never cheaper than the bare interpreter


def test_bench_history_quick_measures_both_sizes_and_the_body_left_out() -> None:
    ratios = _ratios(_run_quick("bench_history.py"))
    file_ratio = ratios["include_data false/default file bytes per kept event"]
    payload_ratio = ratios["include_data false/default payload bytes per event"]
    assert 0 < file_ratio <= 1.0
    assert 0.5 < payload_ratio < 1.0  # the body is gone from every stored event


def test_bench_status_quick_times_the_page_against_the_health_probe() -> None:
    output = _run_quick("bench_status.py")
    ratios = _ratios(output)
    assert {"/api/status p50/healthz p50", "/ p50/healthz p50"} <= set(ratios)
    assert all(value > 0 for value in ratios.values())
    assert "p99" in output
