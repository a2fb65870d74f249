"""`poller once` finishes what it can: waits that end before its deadline are made, in one run.

The real CLI against the simulator, a real receiver and the fake Slack (which allows one message
per second per webhook, answering 429 otherwise).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from poller.lab.receiver import ReceiverThread
from poller.lab.simulator import SimulatorThread
from tests.fake_slack import FakeSlack, fake_slack_in_thread
from tests.support import run_poller, seeded_simulator, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(21, sessions=2, per_session=2, body="before the watch") as running:
        yield running


def _add(sim: SimulatorThread, body: str, session: int = 0) -> None:
    service = sim.simulator.service_sids()[0]
    sessions = sorted(sim.simulator.session_sids(service))
    sim.simulator.add_interaction(service, sessions[session], body=body)


def _failing(receiver: ReceiverThread, times: int, retry_after: str) -> None:
    def script() -> None:
        receiver.state.fail_next = times
        receiver.state.fail_status = 429
        receiver.state.retry_after = retry_after

    receiver.call(script)


def _pending(config: str) -> dict[str, Any]:
    state = json.loads(run_poller("state", "show", "-c", config).stdout)
    pending: dict[str, Any] = state["outbox"]["pending"]
    return pending


def test_429_with_retry_after_2_twice_is_waited_out_and_delivered_in_one_run(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path, sim, receiver.base_url))
    assert run_poller("once", "-c", config).returncode == 0  # the baseline
    _add(sim, "answered 429 twice")
    _failing(receiver, times=2, retry_after="2")
    started = time.monotonic()
    run = run_poller("once", "-c", config)
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    (item,) = receiver.received()
    assert item.event_type == "interaction.created"
    assert receiver.call(lambda: receiver.state.attempts) == 3
    assert took >= 4.0  # both Retry-After: 2 were honoured, not skipped
    assert _pending(config) == {}


def test_retry_after_an_hour_exits_1_at_once_and_keeps_the_event(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path, sim, receiver.base_url))
    assert run_poller("once", "-c", config).returncode == 0
    _add(sim, "answered 429 for an hour")
    _failing(receiver, times=1, retry_after="3600")
    started = time.monotonic()
    run = run_poller("once", "-c", config)
    took = time.monotonic() - started
    assert run.returncode == 1
    assert took < 30.0  # the deadline is 60 s: it did not wait for it
    assert receiver.call(lambda: receiver.state.attempts) == 1
    assert receiver.received() == []
    assert _pending(config) == {"ops": 1}
    finished = [json.loads(line) for line in run.stderr.splitlines() if "once_finished" in line]
    assert [f["pending"] for f in finished] == [1]

    # Kept, not lost: the next `once` (timers ignored) delivers it.
    assert run_poller("once", "-c", config).returncode == 0
    assert len(receiver.received()) == 1


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack_in_thread() as fake:
        yield fake


def _slack_config(tmp_path: Path, sim: SimulatorThread, slack: FakeSlack) -> str:
    sinks = [{"name": "chat", "type": "slack", "webhook_url": slack.webhook_url}]
    return str(write_config(tmp_path, sim, "http://127.0.0.1:9", sinks=sinks))


def test_slack_pacing_holds_across_two_once_runs(
    sim: SimulatorThread, slack: FakeSlack, tmp_path: Path
) -> None:
    # The second run posts within a second of the first only when the machine is quick enough
    # to start it that fast; tests/sinks/test_slack_pacing_state.py shows the same with clocks.
    config = _slack_config(tmp_path, sim, slack)
    assert run_poller("once", "-c", config).returncode == 0
    _add(sim, "first run")
    assert run_poller("once", "-c", config).returncode == 0
    _add(sim, "second run, a moment later", session=1)
    second = run_poller("once", "-c", config)
    assert second.returncode == 0, second.stderr
    assert slack.rejected == []  # the second run waited its second instead of a 429
    first_at, second_at = (post.at for post in slack.accepted)
    assert second_at - first_at >= 1.0


def test_a_pause_slack_asked_for_holds_in_the_next_once(
    sim: SimulatorThread, slack: FakeSlack, tmp_path: Path
) -> None:
    config = _slack_config(tmp_path, sim, slack)
    assert run_poller("once", "-c", config).returncode == 0
    _add(sim, "Slack asks for an hour's pause")
    slack.fail_webhook(429, "rate_limited", retry_after="3600")
    assert run_poller("once", "-c", config).returncode == 1
    assert len(slack.rejected) == 1

    again = run_poller("once", "-c", config)
    assert again.returncode == 1
    assert len(slack.rejected) == 1 and slack.accepted == []  # Slack was not called again
    assert _pending(config) == {"chat": 1}
