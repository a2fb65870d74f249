"""`poller run` end to end: the daemon as a child process, the simulator, a real receiver."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from poller.lab.receiver import Received, ReceiverThread
from poller.lab.simulator import SimulatorThread, run_traffic
from poller.twilio.records import Fingerprint
from tests.support import (
    DaemonProcess,
    free_port,
    run_poller,
    seeded_simulator,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(11, sessions=3, per_session=2) as running:
        yield running


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def daemon_factory(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path, port: int
) -> Iterator[DaemonProcess]:
    config = write_config(tmp_path, sim, receiver.base_url, http={"listen": f"127.0.0.1:{port}"})
    daemon = DaemonProcess(config, tmp_path)
    yield daemon
    daemon.kill()


def _get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
    except httpx.TransportError:
        return None


def _ready(port: int) -> bool:
    response = _get(port, "/readyz")
    return response is not None and response.status_code == 200


def _delivered(received: list[Received]) -> dict[tuple[str, Fingerprint], set[str]]:
    """(interaction sid, fingerprint) -> the webhook ids that carried it."""
    seen: dict[tuple[str, Fingerprint], set[str]] = defaultdict(set)
    for item in received:
        record = item.body["data"]["interaction"]
        fp = Fingerprint(
            record["date_updated"],
            record["inbound_resource_status"],
            record["outbound_resource_status"],
        )
        seen[(record["sid"], fp)].add(item.webhook_id)
    return seen


def _undelivered_latest(sim: SimulatorThread, mark: int, received: list[Received]) -> set[str]:
    latest = {c.interaction_sid: c.fingerprint for c in sim.simulator.change_log(mark)}
    delivered = _delivered(received)
    return {sid for sid, fp in latest.items() if (sid, fp) not in delivered}


def _traffic(sim: SimulatorThread, stop: asyncio.Event, rate: float = 10.0) -> None:
    sim.submit(run_traffic(sim.simulator, rate, stop=stop, seed=3))


def test_sigterm_mid_traffic_drains_and_a_restart_delivers_everything(
    sim: SimulatorThread, receiver: ReceiverThread, daemon_factory: DaemonProcess, port: int
) -> None:
    daemon = daemon_factory.start()
    wait_for(lambda: _ready(port), what="the daemon to be ready (baselined)")
    assert receiver.received() == []  # the history was baselined, not sent
    mark = len(sim.simulator.change_log())

    stop = sim.submit(_make_event()).result()
    _traffic(sim, stop)
    wait_for(lambda: len(receiver.received()) >= 5, what="events to flow")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert any('"daemon_stopped"' in line for line in daemon.log_lines())

    # Traffic goes on while the daemon is down; then a restart catches up.
    made_before = len(sim.simulator.change_log(mark))
    wait_for(lambda: len(sim.simulator.change_log(mark)) >= made_before + 5, what="traffic")
    sim.submit(_set(stop))
    daemon.start()
    wait_for(
        lambda: not _undelivered_latest(sim, mark, receiver.received()),
        timeout=60,
        what="every latest state to be delivered",
    )
    assert daemon.stop() == 0
    received = receiver.received()
    assert all(r.signed for r in received)
    for key, ids in _delivered(received).items():
        assert len(ids) == 1, f"{key} was delivered under several ids: {ids}"
    created = {
        r.body["data"]["interaction"]["sid"]
        for r in received
        if r.event_type == "interaction.created"
    }
    assert created == {c.interaction_sid for c in sim.simulator.change_log(mark)}


def test_all_sessions_follows_sessions_appearing_closing_and_vanishing(
    sim: SimulatorThread, receiver: ReceiverThread, daemon_factory: DaemonProcess, port: int
) -> None:
    s = sim.simulator
    service = s.service_sids()[0]
    first, second, _quiet = sorted(s.session_sids(service))
    daemon = daemon_factory.start()
    wait_for(lambda: _ready(port), what="the daemon to be ready")

    # A session created after the watch began is new traffic: all of it is sent.
    new = s.add_session(service)["sid"]
    new_records = [s.add_interaction(service, new, body=f"n{n}")["sid"] for n in range(3)]
    wait_for(
        lambda: (
            {r.body["data"]["interaction"]["sid"] for r in receiver.received()} >= set(new_records)
        ),
        what="the new session's interactions",
    )
    # Closing: its last interaction still arrives, and so do status changes after the close
    # (a message queued before it is delivered after it); once all is settled, it is left.
    last = s.add_interaction(service, first, body="last words")["sid"]
    s.close_session(first)
    s.delete_session(second)
    wait_for(
        lambda: last in {r.body["data"]["interaction"]["sid"] for r in receiver.received()},
        what="the closed session's last interaction",
    )
    mark = len(s.change_log())
    for sid in s.interaction_sids(first):
        s.set_status(sid, inbound="delivered", outbound="delivered")
    wait_for(
        lambda: not _undelivered_latest(sim, mark, receiver.received()),
        what="the status changes after the close",
    )

    def gone() -> int:
        response = _get(port, "/metrics")
        assert response is not None
        for line in response.text.splitlines():
            if line.startswith("poller_watched_sessions "):
                return int(float(line.split()[1]))
        return -1

    wait_for(lambda: gone() == 2, what="closed and deleted sessions to leave the watch")
    assert daemon.stop() == 0
    state = json.loads(run_poller("state", "show", "-c", str(daemon.config)).stdout)
    assert state["sessions"]["gone"] == 2
    sids = {r.body["data"]["interaction"]["sid"] for r in receiver.received()}
    assert sids == {*new_records, *s.interaction_sids(first)}  # nothing of `third`


def test_metrics_healthz_and_readyz_from_a_running_daemon(
    sim: SimulatorThread, receiver: ReceiverThread, daemon_factory: DaemonProcess, port: int
) -> None:
    daemon = daemon_factory.start()
    wait_for(lambda: _ready(port), what="the daemon to be ready")
    s = sim.simulator
    service = s.service_sids()[0]
    s.add_interaction(service, s.session_sids(service)[0], body="counted")
    wait_for(lambda: len(receiver.received()) == 1, what="one delivery")

    healthz = _get(port, "/healthz")
    assert healthz is not None and healthz.status_code == 200
    metrics = _get(port, "/metrics")
    assert metrics is not None and metrics.status_code == 200
    text = metrics.text
    for name in (
        'poller_polls_total{outcome="ok"}',
        'poller_twilio_requests_total{status="200"}',
        'poller_events_total{type="interaction.created"} 1.0',
        'poller_deliveries_total{outcome="success",sink="ops"} 1.0',
        "poller_outbox_pending",
        "poller_poll_duration_seconds_bucket",
        "poller_last_successful_poll_timestamp_seconds",
    ):
        assert name in text, name
    assert daemon.stop() == 0


def test_sighup_keeps_the_old_config_when_the_new_one_is_invalid(
    sim: SimulatorThread, receiver: ReceiverThread, daemon_factory: DaemonProcess, port: int
) -> None:
    daemon = daemon_factory.start()
    wait_for(lambda: _ready(port), what="the daemon to be ready")
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace("page_size: 50", "page_size: 0"))
    daemon.signal(signal.SIGHUP)
    wait_for(
        lambda: any('"reload_rejected"' in line for line in daemon.log_lines()),
        what="the reload to be rejected",
    )
    assert not any("page_size: 0" in line and "auth_token" in line for line in daemon.log_lines())
    s = sim.simulator
    service = s.service_sids()[0]
    s.add_interaction(service, s.session_sids(service)[0], body="after a bad reload")
    wait_for(lambda: len(receiver.received()) == 1, what="delivery on the old config")

    daemon.config.write_text(good.replace("/hooks/ops", "/hooks/reloaded"))
    daemon.signal(signal.SIGHUP)
    wait_for(
        lambda: any('"reload_accepted"' in line for line in daemon.log_lines()),
        what="the reload to be accepted",
    )
    s.add_interaction(service, s.session_sids(service)[1], body="after a good reload")
    wait_for(lambda: len(receiver.received()) == 2, what="delivery on the new config")
    assert receiver.received()[1].path == "/hooks/reloaded"
    assert daemon.stop() == 0


async def _make_event() -> asyncio.Event:
    return asyncio.Event()


async def _set(event: asyncio.Event) -> None:
    event.set()
