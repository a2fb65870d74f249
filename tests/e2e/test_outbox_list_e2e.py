"""`poller outbox list` end to end: disabled and retrying sinks, with their one-line reasons.

The real CLI against the seeded simulator, with a Discord fake whose webhook was deleted (404,
code 10015), an aiosmtpd server that refuses the password (535), and a receiver that answers
410 Gone; then the same sinks fixed, and a daemon resumed by `poller outbox retry --sink`; and
a receiver answering 503, whose sink is listed as retrying.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from poller.lab.receiver import ReceiverThread
from poller.lab.simulator import SimulatorThread
from tests.fake_discord import FakeDiscord
from tests.fake_server import in_thread
from tests.smtp_server import PASSWORD, USER, smtp_server
from tests.support import (
    SECRET,
    DaemonProcess,
    run_poller,
    seeded_simulator,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

# Two sessions of three interactions each, all events (notify_all): below every digest threshold
# per session, six events per sink in all.
EVENTS = 6


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(21, sessions=2, per_session=3, body="never in a listing") as running:
        yield running


def _sinks(discord_url: str, smtp_port: int, password: str, receiver_url: str) -> list[Any]:
    return [
        {"name": "chat", "type": "discord", "webhook_url": discord_url, "digest_threshold": 50},
        {
            "name": "mail",
            "type": "email",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "security": "none",
            "username": USER,
            "password": password,
            "from": "poller@example.test",
            "to": ["oncall@example.test"],
            "digest_threshold": 50,
        },
        {"name": "ops", "type": "webhook", "url": f"{receiver_url}/hooks/ops", "secret": SECRET},
    ]


def _listing(config: Path, *args: str) -> list[dict[str, Any]]:
    listed = run_poller("outbox", "list", "-c", str(config), *args)
    assert listed.returncode == 0, listed.stderr
    assert "never in a listing" not in listed.stdout
    return [json.loads(line) for line in listed.stdout.splitlines()]


def test_disabled_sinks_are_listed_with_reason_and_count_then_fixed_and_cleared(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    receiver.call(lambda: setattr(receiver.state, "status", 410))
    with in_thread(FakeDiscord()) as discord, smtp_server() as smtp:
        deleted = discord.base_url + "/api/webhooks/1/deleted-token"
        sinks = _sinks(deleted, smtp.port, "not-the-password", receiver.base_url)
        first_run = {"first_run": "notify_all"}
        config = write_config(tmp_path, sim, receiver.base_url, sinks=sinks, poll=first_run)

        once = run_poller("once", "-c", str(config))
        assert once.returncode == 1, once.stderr  # nothing delivered: still pending
        rows = _listing(config)
        assert [(r["kind"], r["sink"], r["last_status"], r["pending"]) for r in rows] == [
            ("sink_disabled", "chat", 404, EVENTS),
            ("sink_disabled", "mail", 535, EVENTS),
            ("sink_disabled", "ops", 410, EVENTS),
        ]
        chat, mail, ops = rows
        assert chat["reason"] == (  # the example in docs/operations.md
            "discord sink 'chat': HTTP 404 code 10015 (the webhook was deleted; create a new one)"
        )
        assert "username or password" in mail["reason"]
        assert "410" in ops["reason"]
        assert all(r["since"] == r["last_seen_at"] for r in rows)
        assert "poller outbox retry --sink mail" in mail["resume"]
        assert PASSWORD not in json.dumps(rows) and "not-the-password" not in json.dumps(rows)
        assert _listing(config, "--sink", "mail") == [mail]
        state = json.loads(run_poller("state", "show", "-c", str(config)).stdout)
        assert state["outbox"]["pending"] == {"chat": EVENTS, "mail": EVENTS, "ops": EVENTS}
        assert state["outbox"]["disabled"]["mail"]["status"] == 535

        # Another run meets the same answers: still disabled, since the first time.
        assert run_poller("once", "-c", str(config)).returncode == 1
        again = _listing(config)
        assert [r["since"] for r in again] == [r["since"] for r in rows]
        assert all(r["last_seen_at"] > r["since"] for r in again)

        # Fixed: the right webhook, the right password, a receiver that takes events.
        receiver.call(lambda: setattr(receiver.state, "status", 204))
        sinks = _sinks(discord.webhook_url, smtp.port, PASSWORD, receiver.base_url)
        config = write_config(tmp_path, sim, receiver.base_url, sinks=sinks, poll=first_run)
        fixed = run_poller("once", "-c", str(config))
        assert fixed.returncode == 0, fixed.stderr
        assert len(discord.messages()) == EVENTS
        assert len(smtp.mailbox.messages) == EVENTS
    assert len(receiver.received()) == EVENTS
    assert _listing(config) == []
    state = json.loads(run_poller("state", "show", "-c", str(config)).stdout)
    assert state["outbox"]["disabled"] == {} and state["outbox"]["pending"] == {}


def test_outbox_retry_resumes_a_disabled_sink_in_the_running_daemon(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    receiver.call(lambda: setattr(receiver.state, "status", 410))
    config = write_config(tmp_path, sim, receiver.base_url, poll={"first_run": "notify_all"})
    daemon = DaemonProcess(config, tmp_path).start()
    try:
        wait_for(
            lambda: any(e.get("event") == "sink_disabled" for e in daemon.log_events()),
            what="sink_disabled",
        )
        (row,) = _listing(config)
        assert (row["sink"], row["last_status"], row["pending"]) == ("ops", 410, EVENTS)

        receiver.call(lambda: setattr(receiver.state, "status", 204))
        retried = run_poller("outbox", "retry", "-c", str(config), "--sink", "ops")
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.splitlines()[0] == "requeued 0 deliveries"
        assert retried.stdout.splitlines()[1].startswith("resumed sink ops (disabled: ")
        wait_for(lambda: len(receiver.received()) == EVENTS, what="the held events")
        daemon.ensure_alive()
        assert any(e.get("event") == "sink_resumed" for e in daemon.log_events())
        assert _listing(config) == []
    finally:
        assert daemon.stop() == 0


def test_a_sink_whose_deliveries_are_retried_is_listed_with_the_latest_reason(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    receiver.call(lambda: setattr(receiver.state, "status", 503))
    config = write_config(
        tmp_path,
        sim,
        receiver.base_url,
        poll={"first_run": "notify_all"},
        delivery={"once_deadline_seconds": 2},
    )
    assert run_poller("once", "-c", str(config)).returncode == 1
    (row,) = _listing(config)
    assert (row["kind"], row["sink"], row["last_status"]) == ("sink_retrying", "ops", 503)
    assert row["pending"] == EVENTS and 1 <= row["failing"] <= EVENTS and row["attempts"] >= 1
    assert row["last_error"] == "webhook sink 'ops': receiver answered HTTP 503"
    assert _listing(config, "--sink", "other") == []

    receiver.call(lambda: setattr(receiver.state, "status", 204))
    assert run_poller("once", "-c", str(config)).returncode == 0
    assert _listing(config) == []
