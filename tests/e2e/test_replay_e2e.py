"""`poller events replay` beside a running daemon: a receiver that lost a day gets it again.

The state (SQLite, and PostgreSQL) holds events delivered over the last two days, seeded
through the store API at their past times on the simulator's own sessions. Then the real
daemon runs against the simulator and a real receiver, delivers live events too, and `poller
events replay` runs beside it (the CLI opens the SQLite file the daemon holds, as `poller outbox
retry` does; on PostgreSQL it writes without a lease). The receiver must get exactly the
selected events, in their original order, under their own `webhook-id`s, signed; nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml

from poller.config import load_config
from poller.events import Event
from poller.lab.receiver import Received, ReceiverThread
from poller.lab.simulator import SimulatorThread
from poller.state.open import open_store
from tests.history_seed import Past, seed_delivered
from tests.sink_contract_cases import make_event
from tests.support import DaemonProcess, free_port, run_poller, seeded_simulator, wait_for
from tests.support import write_config as write_base_config

pytestmark = pytest.mark.slow

HOUR = 3600.0


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    # Sessions with nothing in them yet: the daemon's baseline finds nothing to send.
    with seeded_simulator(41, sessions=2, per_session=0) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgres"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The config's ``state``: a SQLite file, or a PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "state.db")}
    return {"url": request.getfixturevalue("pg_url")}


def _sessions(sim: SimulatorThread) -> tuple[str, str, str]:
    service = sim.simulator.service_sids()[0]
    first, second = sorted(sim.simulator.session_sids(service))
    return service, first, second


def _config(
    sim: SimulatorThread, receiver: ReceiverThread, folder: Path, state: dict[str, str]
) -> Path:
    port = free_port()
    path = write_base_config(folder, sim, receiver.base_url, http={"listen": f"127.0.0.1:{port}"})
    config = yaml.safe_load(path.read_text())
    config["state"] = state
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _seed(config: Path, past: list[Past]) -> None:
    """Store ``past`` through the store API, as the configured backend keeps it."""

    async def seed() -> None:
        async with await open_store(load_config(config).state) as store:
            await seed_delivered(store, past)

    asyncio.run(seed())


def _past(service: str, session: str, hours_ago: list[float], now: float) -> list[Past]:
    events: list[Past] = []
    for ago in hours_ago:
        event = replace(make_event(session_sid=session), service_sid=service)
        events.append(Past(event, now - ago * HOUR))
    return events


def _start(config: Path) -> DaemonProcess:
    daemon = DaemonProcess(config, config.parent).start()
    port = load_config(config).http
    assert port is not None
    wait_for(lambda: _ready(daemon, port.port), what="the daemon to be ready (baselined)")
    return daemon


def _ready(daemon: DaemonProcess, port: int) -> bool:
    daemon.ensure_alive()
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _pending(config: Path) -> int:
    shown = run_poller("state", "show", "-c", str(config))
    assert shown.returncode == 0, shown.stderr
    return sum(json.loads(shown.stdout)["outbox"]["pending"].values())


def _replay(config: Path, *args: str) -> str:
    done = run_poller("events", "replay", "-c", str(config), "--sink", "ops", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _settled(receiver: ReceiverThread, config: Path, count: int) -> list[Received]:
    """Wait until the receiver has ``count`` and nothing is pending: nothing else can come."""
    wait_for(
        lambda: len(receiver.received()) >= count and _pending(config) == 0,
        timeout=30,
        what=f"{count} deliveries and an empty outbox",
    )
    return receiver.received()


def _check_sent(received: list[Received], events: list[Event]) -> None:
    assert [r.webhook_id for r in received] == [e.id for e in events]
    assert all(r.signed for r in received)
    for item, event in zip(received, events, strict=True):
        assert item.body == json.loads(json.dumps(event.payload()))


def test_a_receiver_that_lost_a_day_gets_exactly_that_day_again_in_order(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path, state: dict[str, str]
) -> None:
    service, first, _ = _sessions(sim)
    past = _past(service, first, [40, 30, 25, 20, 6, 1], time.time())
    config = _config(sim, receiver, tmp_path, state)
    _seed(config, past)
    daemon = _start(config)
    try:
        # Live events, detected and delivered by this daemon: in the history too.
        live = [sim.simulator.add_interaction(service, first, body=f"live {n}") for n in range(2)]
        wait_for(lambda: len(receiver.received()) == 2, what="the live events")
        live_sent = receiver.received()
        # (one second, one session: Twilio's order, by SID, not the order of creation)
        assert {r.body["data"]["interaction"]["sid"] for r in live_sent} == {
            record["sid"] for record in live
        }
        receiver.call(receiver.state.received.clear)  # the receiver's side lost it all

        out = _replay(daemon.config, "--since", "1d")
        assert out == "queued 5 events for sink ops; skipped 0 already queued\n"
        received = _settled(receiver, daemon.config, 5)
        day = [p.event for p in past[3:]]
        _check_sent(received[:3], day)
        assert [r.webhook_id for r in received[3:]] == [r.webhook_id for r in live_sent]
        assert [r.body for r in received[3:]] == [r.body for r in live_sent]
        assert len(received) == 5
        assert receiver.state.rejected_signatures == 0
        daemon.ensure_alive()
    finally:
        assert daemon.stop() == 0


def test_replay_by_session_and_by_ids_beside_the_daemon_and_a_sink_it_lacks(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path, state: dict[str, str]
) -> None:
    service, first, second = _sessions(sim)
    now = time.time()
    ones = _past(service, first, [50, 40], now)
    twos = _past(service, second, [45, 30, 2], now)
    config = _config(sim, receiver, tmp_path, state)
    _seed(config, sorted(ones + twos, key=lambda p: p.at))
    daemon = _start(config)
    try:
        assert _replay(daemon.config, "--session", second) == (
            "queued 3 events for sink ops; skipped 0 already queued\n"
        )
        _check_sent(_settled(receiver, daemon.config, 3), [p.event for p in twos])
        receiver.call(receiver.state.received.clear)

        ids = [ones[1].event.id, ones[0].event.id]  # given out of order: sent in order
        assert _replay(daemon.config, *ids) == (
            "queued 2 events for sink ops; skipped 0 already queued\n"
        )
        _check_sent(_settled(receiver, daemon.config, 2), [p.event for p in ones])

        gone = run_poller("events", "replay", "-c", str(daemon.config), "--sink", "old", *ids)
        assert gone.returncode == 2
        assert gone.stdout == ""
        assert gone.stderr.splitlines() == [
            "poller: error: --sink 'old': no sink of that name in the config (its sinks: ops)"
        ]
        daemon.ensure_alive()
    finally:
        assert daemon.stop() == 0
    assert len(receiver.received()) == 2
