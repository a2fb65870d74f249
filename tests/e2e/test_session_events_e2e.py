"""Issue 15's first "Done when", end to end: session lifecycle events through the real CLI.

The real `poller once` and `poller run` poll the simulator over HTTP and deliver to the real
signature-verifying receiver. A session closed after new interactions gives one
`session.updated` with `changes.status`, after those interactions' events, to every sink that
asked for it; a session created after the watch began gives `session.created` before its
interactions'; a sink that asked for interaction events only gets none of them; and a watch of
explicit sessions, which does not read the Sessions list, learns of the close by fetching the
Session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from poller.lab.receiver import Received, ReceiverThread
from poller.lab.simulator import SimulatorThread
from tests.support import SECRET, DaemonProcess, run_poller, wait_for, write_config

pytestmark = pytest.mark.slow

ALL = ["interaction.created", "interaction.updated", "session.created", "session.updated"]


def _sink(name: str, receiver: ReceiverThread, events: Sequence[str] | None) -> dict[str, Any]:
    sink: dict[str, Any] = {
        "name": name,
        "type": "webhook",
        "url": f"{receiver.base_url}/hooks/{name}",
        "secret": SECRET,
        "timeout_seconds": 5,
    }
    if events is not None:
        sink["events"] = list(events)
    return sink


def _sinks(receiver: ReceiverThread) -> list[dict[str, Any]]:
    return [
        _sink("lifecycle", receiver, ALL),
        _sink("closes", receiver, ["session.updated"]),
        _sink("plain", receiver, None),  # the default: interaction events only
    ]


def _at(receiver: ReceiverThread, name: str, session: str | None = None) -> list[Received]:
    """What one sink received (of one session), in arrival order."""
    return [
        r
        for r in receiver.received()
        if r.path == f"/hooks/{name}"
        and (session is None or r.body["data"]["session_sid"] == session)
    ]


def _types(received: Sequence[Received]) -> list[str]:
    return [r.event_type for r in received]


def _session_with_history(sim: SimulatorThread, service: str, interactions: int) -> str:
    session: str = sim.simulator.add_session(service)["sid"]
    for n in range(interactions):
        sim.simulator.add_interaction(service, session, body=f"history {n}")
    return session


def test_a_close_and_a_new_session_reach_every_sink_that_asked_in_session_order(
    tmp_path: Path, receiver: ReceiverThread
) -> None:
    with SimulatorThread(seed=15) as sim:
        s = sim.simulator
        service = s.add_service()["sid"]
        closing = _session_with_history(sim, service, 2)
        quiet = _session_with_history(sim, service, 2)
        config = str(write_config(tmp_path, sim, receiver.base_url, sinks=_sinks(receiver)))
        assert run_poller("once", "-c", config).returncode == 0  # the baseline: no events
        assert receiver.received() == []

        late = [s.add_interaction(service, closing, body=f"late {n}")["sid"] for n in range(3)]
        s.close_session(closing, reason="order delivered")
        created = s.add_session(service)["sid"]
        first = [s.add_interaction(service, created, body=f"new {n}")["sid"] for n in range(2)]
        result = run_poller("once", "-c", config)
        assert result.returncode == 0, result.stderr

    lifecycle = _at(receiver, "lifecycle", closing)
    assert _types(lifecycle) == ["interaction.created"] * 3 + ["session.updated"]
    # within one second, interactions go in SID order (poller.detect.diff): compare as sets
    assert {r.body["data"]["interaction"]["sid"] for r in lifecycle[:3]} == set(late)
    (closed,) = _at(receiver, "closes")
    assert closed.webhook_id == lifecycle[-1].webhook_id
    data = closed.body["data"]
    assert (data["service_sid"], data["session_sid"]) == (service, closing)
    assert data["changes"]["status"] == ["in-progress", "closed"]
    assert data["changes"]["closed_reason"] == [None, "order delivered"]
    assert data["session"]["status"] == "closed" and data["session"]["sid"] == closing
    assert data["session"]["links"]["interactions"].endswith("/Interactions")

    new = _at(receiver, "lifecycle", created)
    assert _types(new) == ["session.created", "interaction.created", "interaction.created"]
    assert new[0].body["data"]["session"]["sid"] == created
    assert {r.body["data"]["interaction"]["sid"] for r in new[1:]} == set(first)
    assert _at(receiver, "lifecycle", quiet) == []

    plain = _at(receiver, "plain")
    assert _types(plain) == ["interaction.created"] * 5
    assert all(r.signed for r in receiver.received())


def test_an_explicit_watch_fetches_its_session_and_gets_the_close(
    tmp_path: Path, receiver: ReceiverThread
) -> None:
    with SimulatorThread(seed=16) as sim:
        s = sim.simulator
        service = s.add_service()["sid"]
        watched = _session_with_history(sim, service, 1)
        watch = [{"service_sid": service, "sessions": [watched]}]
        sinks = _sinks(receiver)
        config = str(write_config(tmp_path, sim, receiver.base_url, watch=watch, sinks=sinks))
        assert run_poller("once", "-c", config).returncode == 0
        late = s.add_interaction(service, watched, body="last words")["sid"]
        s.close_session(watched)
        assert run_poller("once", "-c", config).returncode == 0
        requests = s.stats()["requests"]

    assert "sessions" not in requests  # the Sessions list was never read
    # One fetch at the baseline (the fingerprint), one for the poll that found activity.
    assert requests["session"] == {"200": 2}
    lifecycle = _at(receiver, "lifecycle")
    assert _types(lifecycle) == ["interaction.created", "session.updated"]
    assert lifecycle[0].body["data"]["interaction"]["sid"] == late
    (closed,) = _at(receiver, "closes")
    assert closed.body["data"]["changes"]["status"] == ["in-progress", "closed"]
    assert _types(_at(receiver, "plain")) == ["interaction.created"]


def test_the_daemon_tells_a_close_without_new_interactions_to_an_explicit_watch(
    tmp_path: Path, receiver: ReceiverThread
) -> None:
    with SimulatorThread(seed=17) as sim:
        s = sim.simulator
        service = s.add_service()["sid"]
        watched = _session_with_history(sim, service, 1)
        watch = [{"service_sid": service, "sessions": [watched]}]
        config = write_config(
            tmp_path,
            sim,
            receiver.base_url,
            watch=watch,
            sinks=_sinks(receiver),
            # the safety net: each Session is fetched at least this often
            poll={"full_sweep_seconds": 2},
            log={"format": "json", "level": "debug"},  # session_baselined is a debug line
        )
        daemon = DaemonProcess(config, tmp_path).start()
        try:
            wait_for(
                lambda: any(e.get("event") == "session_baselined" for e in daemon.log_events()),
                what="the baseline",
            )
            s.close_session(watched)
            wait_for(lambda: len(_at(receiver, "closes")) == 1, what="the session.updated")
            daemon.ensure_alive()
        finally:
            assert daemon.stop() == 0

    (closed,) = _at(receiver, "closes")
    assert closed.body["data"]["changes"]["status"] == ["in-progress", "closed"]
    assert _types(_at(receiver, "lifecycle")) == ["session.updated"]
    assert _at(receiver, "plain") == []
