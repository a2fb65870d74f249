"""`poller once` end to end: the real CLI against the simulator and a real receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from poller.lab.receiver import ReceiverThread
from poller.lab.simulator import SimulatorThread
from tests.support import SECRET, run_poller, seeded_simulator, write_config

pytestmark = pytest.mark.slow

SHORT_DEADLINE = {"once_deadline_seconds": 4}


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(7, sessions=2, per_session=3, body="before the watch") as running:
        yield running


def _sessions(sim: SimulatorThread) -> tuple[str, list[str]]:
    service = sim.simulator.service_sids()[0]
    return service, sorted(sim.simulator.session_sids(service))


def test_once_baselines_then_delivers_exactly_the_changes(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path, sim, receiver.base_url))
    first = run_poller("once", "-c", config)
    assert first.returncode == 0, first.stderr
    assert receiver.received() == []

    service, sessions = _sessions(sim)
    existing = sim.simulator.interaction_sids(sessions[0])[0]
    for n in range(4):
        sim.simulator.add_interaction(service, sessions[n % 2], body=f"new {n}")
    sim.simulator.set_status(existing, outbound="failed")

    second = run_poller("once", "-c", config)
    assert second.returncode == 0, second.stderr
    got = receiver.received()
    assert sorted(r.event_type for r in got) == ["interaction.created"] * 4 + [
        "interaction.updated"
    ]
    assert all(r.signed for r in got)
    updated = next(r for r in got if r.event_type == "interaction.updated")
    assert updated.body["data"]["interaction"]["sid"] == existing
    assert updated.body["data"]["changes"]["outbound_resource_status"][1] == "failed"

    third = run_poller("once", "-c", config)
    assert third.returncode == 0, third.stderr
    assert len(receiver.received()) == 5


def test_signature_verifies_with_the_reference_library(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path, sim, receiver.base_url))
    assert run_poller("once", "-c", config).returncode == 0
    service, sessions = _sessions(sim)
    sim.simulator.add_interaction(service, sessions[0], body="signed")
    assert run_poller("once", "-c", config).returncode == 0
    (item,) = receiver.received()
    headers = dict(item.headers)
    assert headers["webhook-id"] == item.webhook_id and item.webhook_id.startswith("evt_")
    assert headers["content-type"] == "application/json"
    assert Webhook(SECRET).verify(item.raw, headers) == item.body
    other = "whsec_" + "A" * 32
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(item.raw, headers)


def test_receiver_down_keeps_events_pending_until_a_later_once(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    # A receiver that stays down is retried until the deadline: keep it short.
    config = str(write_config(tmp_path, sim, receiver.base_url, delivery=SHORT_DEADLINE))
    assert run_poller("once", "-c", config).returncode == 0
    service, sessions = _sessions(sim)
    sim.simulator.add_interaction(service, sessions[1], body="while the receiver is down")
    receiver.call(lambda: setattr(receiver.state, "status", 503))

    down = run_poller("once", "-c", config)
    assert down.returncode == 1
    state = json.loads(run_poller("state", "show", "-c", config).stdout)
    assert state["outbox"]["pending"] == {"ops": 1}

    receiver.call(lambda: setattr(receiver.state, "status", 204))
    up = run_poller("once", "-c", config)
    assert up.returncode == 0, up.stderr
    (item,) = receiver.received()
    assert item.event_type == "interaction.created"
    state = json.loads(run_poller("state", "show", "-c", config).stdout)
    assert state["outbox"]["pending"] == {}


def test_dead_letter_is_listed_and_requeued(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path, sim, receiver.base_url))
    assert run_poller("once", "-c", config).returncode == 0
    service, sessions = _sessions(sim)
    sim.simulator.add_interaction(service, sessions[0], body="refused")
    receiver.call(lambda: setattr(receiver.state, "status", 400))

    refused = run_poller("once", "-c", config)
    assert refused.returncode == 1
    listed = run_poller("outbox", "list", "-c", config)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["sink"] == "ops" and rows[0]["last_status"] == 400
    assert "refused" not in listed.stdout  # no message body in the listing

    # A dead letter is not retried by `once`.
    receiver.call(lambda: setattr(receiver.state, "status", 204))
    assert run_poller("once", "-c", config).returncode == 0
    assert receiver.received() == []

    requeued = run_poller("outbox", "retry", "-c", config)
    assert requeued.returncode == 0 and "requeued 1" in requeued.stdout
    assert run_poller("once", "-c", config).returncode == 0
    (item,) = receiver.received()
    assert item.webhook_id == rows[0]["event_id"]


def test_sessions_dropped_from_the_config_are_retired(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    service, sessions = _sessions(sim)
    watch_both = [{"service_sid": service, "sessions": sessions}]
    config = str(write_config(tmp_path, sim, receiver.base_url, watch=watch_both))
    assert run_poller("once", "-c", config).returncode == 0
    watch_one = [{"service_sid": service, "sessions": sessions[:1]}]
    config = str(write_config(tmp_path, sim, receiver.base_url, watch=watch_one))
    sim.simulator.add_interaction(service, sessions[1], body="nobody watches this")
    assert run_poller("once", "-c", config).returncode == 0
    state = json.loads(run_poller("state", "show", "-c", config).stdout)
    assert state["sessions"]["gone"] == 1
    assert receiver.received() == []

    # Watched again within the grace period: it is polled again, from where it was left.
    config = str(write_config(tmp_path, sim, receiver.base_url, watch=watch_both))
    assert run_poller("once", "-c", config).returncode == 0
    state = json.loads(run_poller("state", "show", "-c", config).stdout)
    assert state["sessions"]["gone"] == 0
    assert [r.body["data"]["interaction"]["data"] for r in receiver.received()] == [
        json.dumps({"body": "nobody watches this"})
    ]


def test_status_change_after_a_session_closes_is_still_delivered(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    service, sessions = _sessions(sim)
    for earlier in sim.simulator.interaction_sids(sessions[0]):
        sim.simulator.set_status(earlier, inbound="delivered", outbound="delivered")
    config = str(write_config(tmp_path, sim, receiver.base_url))
    assert run_poller("once", "-c", config).returncode == 0
    queued = sim.simulator.add_interaction(
        service, sessions[0], body="sent just before the close", outbound_status="queued"
    )["sid"]
    assert run_poller("once", "-c", config).returncode == 0
    sim.simulator.close_session(sessions[0])
    assert run_poller("once", "-c", config).returncode == 0  # closed, but not settled
    sim.simulator.set_status(queued, outbound="delivered")
    assert run_poller("once", "-c", config).returncode == 0
    got = [
        (r.event_type, r.body["data"]["interaction"]["outbound_resource_status"])
        for r in receiver.received()
    ]
    assert got == [("interaction.created", "queued"), ("interaction.updated", "delivered")]
    state = json.loads(run_poller("state", "show", "-c", config).stdout)
    assert state["sessions"]["gone"] == 1  # settled now: it left


def test_events_waiting_for_a_removed_sink_are_dead_lettered_not_lost(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path, sim, receiver.base_url, delivery=SHORT_DEADLINE))
    assert run_poller("once", "-c", config).returncode == 0
    service, sessions = _sessions(sim)
    sim.simulator.add_interaction(service, sessions[0], body="for the old sink")
    receiver.call(lambda: setattr(receiver.state, "status", 503))
    assert run_poller("once", "-c", config).returncode == 1  # pending for "ops"

    renamed = [{"name": "ops2", "type": "webhook", "url": f"{receiver.base_url}/hooks/ops2"}]
    config = str(write_config(tmp_path, sim, receiver.base_url, sinks=renamed))
    assert run_poller("once", "-c", config).returncode == 1  # it gave up on "ops": say so
    rows = [
        json.loads(line) for line in run_poller("outbox", "list", "-c", config).stdout.splitlines()
    ]
    assert [(r["sink"], r["last_error"]) for r in rows] == [
        ("ops", "the sink is no longer configured")
    ]
    assert run_poller("once", "-c", config).returncode == 0  # nothing pending any more
