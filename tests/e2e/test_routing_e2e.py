"""Issue 4's "Done when", end to end: routing filters, Slack digests and threads, include_data.

The real CLI (`poller once`, `poller run`) polls the simulator and delivers to a signed-webhook
receiver and to the strict fake Slack, which runs on a real clock here: it answers 429 to a
second message within one second and 400 to a message breaking Block Kit's limits, and records
both as rejected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from poller.lab.receiver import Received, ReceiverState, ReceiverThread
from poller.lab.simulator import SimulatorThread
from tests.fake_slack import TOKEN, FakeSlack, Posted, Rejected, fake_slack_in_thread
from tests.support import (
    SECRET,
    DaemonProcess,
    run_poller,
    seeded_simulator,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

NEW_INTERACTIONS = 300
FAILED = frozenset({"failed", "undelivered"})
# A message's outbound status cycles through these; calls alternate failed/completed (a failed
# call must not reach the failures sink: its filter takes messages only).
MESSAGE_STATUSES = ("delivered", "failed", "sent", "undelivered", "queued")
CALL_STATUSES = ("failed", "completed")
HOSTILE = "<!channel> order {n} & <https://evil.example|click> <@U123>"
HANDFUL = 5
DIGEST_HEADLINE = re.compile(r"(\d+) Proxy events? in \d+ sessions?")
CHANNEL = "C0PROXYOPS"


@dataclass(frozen=True)
class Burst:
    """What one baseline + 300 new interactions + one `poller once` left behind."""

    baseline_exit: int
    exit_code: int
    stderr: str = field(repr=False)
    events: int  # events the second poll should produce (created + updated)
    # SIDs of the messages whose outbound status is failed or undelivered
    failed_messages: frozenset[str] = field(repr=False)
    bodies: tuple[str, ...] = field(repr=False)
    slack_accepted: tuple[Posted, ...] = field(repr=False)
    slack_rejected: tuple[Rejected, ...] = field(repr=False)
    failures: tuple[Received, ...] = field(repr=False)
    audit: tuple[Received, ...] = field(repr=False)


class Traffic(NamedTuple):
    events: int
    failed_messages: frozenset[str]
    bodies: tuple[str, ...]


def _new_traffic(sim: SimulatorThread, service: str, sessions: Sequence[str]) -> Traffic:
    """Add the burst and two failures of known messages; say what the sinks should get."""
    s = sim.simulator
    failed: set[str] = set()
    bodies: list[str] = []
    for n in range(NEW_INTERACTIONS):
        session = sessions[n % len(sessions)]
        if n % 10 == 9:
            status = CALL_STATUSES[(n // 10) % 2]
            s.add_interaction(service, session, type="voice", outbound_status=status, duration=7)
            continue
        body = HOSTILE.format(n=n) if n % 3 == 0 else f"plain body {n}"
        bodies.append(body)
        status = MESSAGE_STATUSES[n % len(MESSAGE_STATUSES)]
        record = s.add_interaction(service, session, body=body, outbound_status=status)
        if status in FAILED:
            failed.add(record["sid"])
    # Two known messages fail later: interaction.updated events that the filter must take too.
    for session, status in zip(sessions, sorted(FAILED), strict=False):
        known = s.interaction_sids(session)[0]
        s.set_status(known, outbound=status)
        failed.add(known)
    return Traffic(NEW_INTERACTIONS + 2, frozenset(failed), tuple(bodies))


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> Burst:
    """Baseline, then 300 new interactions in 4 sessions, delivered by one `poller once`."""
    folder = tmp_path_factory.mktemp("burst")
    with (
        SimulatorThread(seed=11) as sim,
        ReceiverThread(ReceiverState(secret=SECRET)) as receiver,
        fake_slack_in_thread() as slack,
    ):
        s = sim.simulator
        service = s.add_service()["sid"]
        sessions = [s.add_session(service)["sid"] for _ in range(4)]
        for session in sessions:
            for _ in range(2):
                s.add_interaction(service, session, body="before the watch")
        sinks: list[dict[str, Any]] = [
            {
                "name": "failures",
                "type": "webhook",
                "url": f"{receiver.base_url}/hooks/failures",
                "secret": SECRET,
                "filter": {"type": ["message"], "outbound_resource_status": sorted(FAILED)},
                "include_data": False,
            },
            {
                "name": "audit",
                "type": "webhook",
                "url": f"{receiver.base_url}/hooks/audit",
                "secret": SECRET,
            },
            {
                "name": "support",
                "type": "slack",
                "webhook_url": slack.webhook_url,
                "digest_threshold": 5,
            },
        ]
        config = str(write_config(folder, sim, receiver.base_url, sinks=sinks))
        baseline = run_poller("once", "-c", config)
        traffic = _new_traffic(sim, service, sessions)
        result = run_poller("once", "-c", config, timeout=90)
        received = receiver.received()
        return Burst(
            baseline_exit=baseline.returncode,
            exit_code=result.returncode,
            stderr=result.stderr,
            events=traffic.events,
            failed_messages=traffic.failed_messages,
            bodies=traffic.bodies,
            slack_accepted=tuple(slack.accepted),
            slack_rejected=tuple(slack.rejected),
            failures=tuple(r for r in received if r.path == "/hooks/failures"),
            audit=tuple(r for r in received if r.path == "/hooks/audit"),
        )


def _events_in(post: Posted) -> int:
    """How many events a Slack message stands for: a digest's count, else one."""
    match = DIGEST_HEADLINE.fullmatch(str(post.payload["text"]))
    return int(match.group(1)) if match else 1


def test_burst_is_delivered_in_full_by_one_once(burst: Burst) -> None:
    assert burst.baseline_exit == 0
    assert burst.exit_code == 0, burst.stderr[-3000:]


def test_burst_reaches_slack_as_a_handful_of_valid_digests(burst: Burst) -> None:
    assert burst.slack_rejected == ()
    assert 1 <= len(burst.slack_accepted) <= HANDFUL
    assert sum(_events_in(post) for post in burst.slack_accepted) == burst.events


def test_slack_messages_never_carry_a_ping_or_a_link_from_a_body(burst: Burst) -> None:
    text = json.dumps([post.payload for post in burst.slack_accepted])
    assert "<!channel>" not in text and "<@U123>" not in text and "<https://evil" not in text


def test_failures_webhook_receives_exactly_the_failed_and_undelivered_messages(
    burst: Burst,
) -> None:
    sids = [r.body["data"]["interaction"]["sid"] for r in burst.failures]
    assert len(sids) == len(set(sids))
    assert set(sids) == burst.failed_messages
    assert all(r.signed for r in burst.failures)
    for item in burst.failures:
        interaction = item.body["data"]["interaction"]
        assert interaction["type"] == "message"
        assert interaction["outbound_resource_status"] in FAILED
    updated = [r for r in burst.failures if r.event_type == "interaction.updated"]
    assert len(updated) == 2
    assert all(r.body["data"]["changes"]["outbound_resource_status"][1] in FAILED for r in updated)


def test_include_data_false_leaves_data_out_of_the_failures_payloads(burst: Burst) -> None:
    assert burst.failures
    for item in burst.failures:
        assert "data" not in item.body["data"]["interaction"]
        assert b"order" not in item.raw and b"plain body" not in item.raw


def test_sink_without_filter_receives_every_event_with_its_data(burst: Burst) -> None:
    assert len(burst.audit) == burst.events
    assert len({r.webhook_id for r in burst.audit}) == burst.events
    bodies = {
        json.loads(r.body["data"]["interaction"]["data"]).get("body")
        for r in burst.audit
        if r.body["data"]["interaction"]["type"] == "message"
    }
    assert set(burst.bodies) <= bodies


# -- Web API mode: one thread per session, in a real daemon --------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(12, sessions=2, per_session=1, body="before the watch") as running:
        yield running


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack_in_thread() as fake:
        yield fake


def _daemon(config: Path, folder: Path, name: str) -> DaemonProcess:
    logs = folder / name
    logs.mkdir()
    return DaemonProcess(config, logs).start()


def _logged(daemon: DaemonProcess, event: str) -> int:
    return sum(1 for line in daemon.log_lines() if f'"event": "{event}"' in line)


def _baseline_done(daemon: DaemonProcess) -> bool:
    return any(
        item.get("event") == "baseline_progress" and item.get("left") == 0
        for item in daemon.log_events()
    )


def _of_session(posts: Sequence[Posted], session: str) -> list[Posted]:
    return [post for post in posts if session in json.dumps(post.payload)]


def _assert_one_thread(posts: Sequence[Posted], count: int, opener: str) -> None:
    """``count`` posts: ``opener``'s starts a thread in the channel, the others reply in it."""
    assert len(posts) == count
    head, *replies = posts
    assert opener in json.dumps(head.payload)
    assert head.target == CHANNEL and head.thread_ts is None and head.ts
    assert [reply.thread_ts for reply in replies] == [head.ts] * (count - 1)


def test_web_api_threads_each_session_across_a_daemon_restart(
    sim: SimulatorThread, slack: FakeSlack, tmp_path: Path
) -> None:
    s = sim.simulator
    service = s.service_sids()[0]
    first, second = sorted(s.session_sids(service))
    chat = {
        "name": "support",
        "type": "slack",
        "token": TOKEN,
        "channel": CHANNEL,
        "api_base_url": slack.api_base_url,
        "digest_threshold": 5,
    }
    config = write_config(tmp_path, sim, "http://127.0.0.1:9", sinks=[chat])
    daemon = _daemon(config, tmp_path, "first")
    try:
        wait_for(lambda: _baseline_done(daemon), what="both baselines")
        news = [s.add_interaction(service, first, body=f"first {n}")["sid"] for n in range(2)]
        s.add_interaction(service, second, body="second 0")
        wait_for(lambda: len(slack.accepted) == 3, what="three messages")
        s.set_status(news[0], outbound="delivered")
        wait_for(lambda: len(slack.accepted) == 4, what="the update's message")
        assert daemon.stop() == 0
    finally:
        daemon.kill()

    # A new process paces from scratch: let Slack's second pass before it may post.
    last = slack.accepted[-1].at
    wait_for(lambda: slack.clock() - last >= slack.interval, what="Slack's second to pass")
    s.add_interaction(service, second, body="after the restart")
    restarted = _daemon(config, tmp_path, "second")
    try:
        wait_for(lambda: len(slack.accepted) == 5, what="the message after the restart")
        assert restarted.stop() == 0
    finally:
        restarted.kill()

    posts = list(slack.accepted)
    assert all(post.kind == "api" for post in posts)
    _assert_one_thread(_of_session(posts, first), 3, opener="first 0")
    _assert_one_thread(_of_session(posts, second), 2, opener="second 0")
    assert slack.rejected == []  # not even a 429: one message per second, as promised
