"""A first start on a big Service: `poller run` over 2,000 sessions under Proxy's 30 requests/s.

The real daemon, the real simulator (30 requests/s, bursts of 150) and a real receiver: the
baseline runs in the background within each cycle's request budget, and an interaction added
to an idle session meanwhile is delivered within two intervals.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from poller.lab.receiver import ReceiverThread
from poller.lab.simulator import SimulatorThread
from tests.support import DaemonProcess, free_port, wait_for, write_config

pytestmark = pytest.mark.slow

SESSIONS = 2000
INTERVAL = 5.0


@pytest.fixture
def sim() -> Iterator[tuple[SimulatorThread, str, str]]:
    """2,000 sessions with history; the idle one is the least recently active of all."""
    with SimulatorThread(seed=10) as running:
        s = running.simulator
        service, _ = s.seed_data(SESSIONS - 1, 2, history_seconds=3600)
        now = int(s.now())
        idle = s.add_session(service, at=now - 7200)["sid"]
        s.add_interaction(service, idle, at=now - 7100)
        s.add_interaction(service, idle, at=now - 7000)
        yield running, service, idle


def _metric(port: int, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_first_start_on_2000_sessions_detects_new_traffic_while_the_baseline_runs(
    sim: tuple[SimulatorThread, str, str], receiver: ReceiverThread, tmp_path: Path
) -> None:
    running, service, idle = sim
    port = free_port()
    config = write_config(
        tmp_path,
        running,
        receiver.base_url,
        twilio={"page_size": 1000, "max_requests_per_second": 25},
        poll={"interval_seconds": INTERVAL},
        http={"listen": f"127.0.0.1:{port}"},
    )
    daemon = DaemonProcess(config, tmp_path)
    try:
        started = time.monotonic()
        daemon.start()
        # Ready from the first cycle: 104 of the 2,000 baselines fit in it.
        wait_for(lambda: _ready(port), timeout=3 * INTERVAL, what="/readyz after one cycle")
        wait_for(lambda: time.monotonic() - started >= 5, timeout=10, what="second 5")
        added_at = time.monotonic()
        new = running.simulator.add_interaction(service, idle, body="hello")["sid"]
        wait_for(
            lambda: len(receiver.received()) > 0,
            timeout=2 * INTERVAL,
            what="the new interaction, within two intervals",
        )
        delivered_after = time.monotonic() - added_at
        pending = _metric(port, "poller_baseline_pending_sessions")
        assert pending is not None and pending > 0, "the baseline should still be running"
        # A few more cycles of the baseline: still nothing that existed at the start is sent.
        wait_for(
            lambda: (_metric(port, "poller_baseline_pending_sessions") or 0) < pending - 300,
            timeout=6 * INTERVAL,
            what="three more cycles of the baseline",
        )
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert [r.body["data"]["interaction"]["sid"] for r in receiver.received()] == [new]
    assert delivered_after <= 2 * INTERVAL
    events = list(daemon.log_events())
    loud = [e for e in events if e.get("level") in ("warning", "error", "critical")]
    assert loud == [], loud[:3]
    progress = [e for e in events if e.get("event") == "baseline_progress"]
    assert progress and all(e["done"] + e["left"] == SESSIONS for e in progress)
    assert progress[0]["eta_seconds"] is not None
