"""The dispatcher: retries, dead letters, disabled sinks, ordering, digests, the daemon loop.

Every dispatcher test runs twice: on an in-memory outbox that states the store's contract in a
few lines, and on the real SQLite ``Store`` in a temporary file.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import pytest
from structlog.testing import capture_logs

from poller.config import DeliveryConfig
from poller.delivery.dispatcher import Dispatcher
from poller.delivery.policy import DeadLetter, DeliveryPolicy, Retry
from poller.delivery.results import OutboxStore, RunResult, SinkResult
from poller.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
    StateError,
)
from poller.events import Event, EventType
from poller.observe.metrics import REGISTRY
from poller.state.history import Attempt
from poller.state.models import Delivery, DisabledSink
from poller.state.sqlite.store import SqliteStore
from poller.twilio.records import Fingerprint
from tests.clock import FakeClock
from tests.sink_contract_cases import make_event

T0 = 1_795_000_000.0
SERVICE = "KS" + "a" * 32


def session(n: int) -> str:
    return f"KC{n:032x}"


# -- an in-memory outbox with the store's semantics ------------------------------------------


@dataclass
class _Row:
    delivery: Delivery
    session_sid: str
    dead: bool = False


class MemoryOutbox:
    """The outbox contract of ``poller.state.Store``, in memory."""

    def __init__(self) -> None:
        self.rows: dict[int, _Row] = {}
        self._ids = itertools.count(1)
        self.disabled: dict[str, DisabledSink] = {}
        self.attempts: list[Attempt] = []  # every one passed in, in order

    async def commit_poll(
        self,
        service_sid: str,
        session_sid: str,
        *,
        fetched: dict[str, Fingerprint],
        events: Sequence[tuple[Event, Sequence[str]]],
        now: float,
    ) -> None:
        for event, sinks in events:
            for sink in sinks:
                delivery = Delivery(next(self._ids), sink, event, 0, now, now, None, None)
                self.rows[delivery.id] = _Row(delivery, event.session_sid)

    async def due(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        heads: dict[str, _Row] = {}
        for row in sorted(self.rows.values(), key=lambda r: r.delivery.id):
            if row.delivery.sink == sink and not row.dead:
                heads.setdefault(row.session_sid, row)
        ready = [
            row.delivery
            for row in heads.values()
            if now is None or row.delivery.next_attempt_at <= now
        ]
        return sorted(ready, key=lambda d: d.id)[:limit]

    async def backlog(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        due_sessions = {
            self.rows[d.id].session_sid for d in await self.due(sink, now, len(self.rows) + 1)
        }
        rows = sorted(self.rows.values(), key=lambda r: r.delivery.id)
        return [
            r.delivery
            for r in rows
            if r.delivery.sink == sink and not r.dead and r.session_sid in due_sessions
        ][:limit]

    async def ack(
        self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
    ) -> None:
        self.attempts.extend(history or ())
        for delivery_id in delivery_ids:
            del self.rows[delivery_id]

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        self.attempts.extend(attempts)

    async def retry_later(
        self,
        delivery_id: int,
        *,
        next_attempt_at: float,
        error: str,
        status: int | None,
        attempt: Attempt | None = None,
    ) -> None:
        self.attempts.extend([attempt] if attempt else [])
        row = self.rows[delivery_id]
        row.delivery = replace(
            row.delivery,
            attempts=row.delivery.attempts + 1,
            next_attempt_at=next_attempt_at,
            last_error=error,
            last_status=status,
        )

    async def dead_letter(
        self,
        delivery_id: int,
        *,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> None:
        await self.retry_later(
            delivery_id, next_attempt_at=now, error=error, status=status, attempt=attempt
        )
        self.rows[delivery_id].dead = True

    async def dead_letters(self, sink: str | None = None) -> list[Delivery]:
        return [
            r.delivery for r in self.rows.values() if r.dead and sink in (None, r.delivery.sink)
        ]

    async def pending_count(self, sink: str | None = None) -> int:
        return sum(1 for r in self.rows.values() if not r.dead and sink in (None, r.delivery.sink))

    async def oldest_pending_enqueued_at(self) -> float | None:
        times = [r.delivery.enqueued_at for r in self.rows.values() if not r.dead]
        return min(times, default=None)

    async def counts_by_sink(self, state: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            if row.dead == (state == "dead"):
                counts[row.delivery.sink] = counts.get(row.delivery.sink, 0) + 1
        return counts

    async def record_sink_disabled(
        self, sink: str, *, status: int | None, reason: str, now: float
    ) -> None:
        since = self.disabled[sink].since if sink in self.disabled else now
        self.disabled[sink] = DisabledSink(sink, since, now, status, reason)

    async def disabled_sinks(self, sink: str | None = None) -> list[DisabledSink]:
        return [d for name, d in sorted(self.disabled.items()) if sink in (None, name)]

    async def clear_sink_disabled(self, sink: str | None = None) -> list[DisabledSink]:
        cleared = await self.disabled_sinks(sink)
        for d in cleared:
            del self.disabled[d.sink]
        return cleared


class StoreUnderTest(OutboxStore, Protocol):
    """What the tests need besides the dispatcher's part: enqueueing and reading back."""

    async def commit_poll(
        self,
        service_sid: str,
        session_sid: str,
        *,
        fetched: dict[str, Fingerprint],
        events: Sequence[tuple[Event, Sequence[str]]],
        now: float,
    ) -> None: ...

    async def dead_letters(self, sink: str | None = None) -> Sequence[Delivery]: ...

    async def pending_count(self, sink: str | None = None) -> int: ...


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    if request.param == "memory":
        yield MemoryOutbox()
        return
    real = SqliteStore.open(tmp_path / "state.db")
    try:
        yield real
    finally:
        await real.close()


async def enqueue(
    store: StoreUnderTest, events: Sequence[Event], sinks: Sequence[str], now: float
) -> None:
    """Commit ``events`` as polls would: one commit per session, in order."""
    for session_sid, group in itertools.groupby(events, key=lambda e: e.session_sid):
        await store.commit_poll(
            SERVICE, session_sid, fetched={}, events=[(e, list(sinks)) for e in group], now=now
        )


async def pending(store: StoreUnderTest, sink: str) -> list[Delivery]:
    return await store.due(sink, None, 1000)


# -- doubles ---------------------------------------------------------------------------------


class CountingAcks:
    """A store whose every ``ack`` call (one transaction) is recorded; the rest passes through."""

    def __init__(self, inner: StoreUnderTest) -> None:
        self.inner = inner
        self.acks: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ack(
        self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
    ) -> None:
        self.acks.append(list(delivery_ids))
        await self.inner.ack(delivery_ids, history=history)


Outcome = BaseException | None


class ScriptedSink:
    """A sink answering from a script per event id (then ``default``); records every call."""

    include_data = True

    def __init__(
        self,
        name: str,
        *,
        script: dict[str, list[Outcome]] | None = None,
        default: Outcome = None,
        digest_threshold: int | None = None,
        before_send: Callable[[Event], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.digest_threshold = digest_threshold
        self.script = script or {}
        self.default = default
        self.before_send = before_send
        self.sent: list[str] = []
        self.delivered: list[str] = []
        self.digests: list[list[str]] = []
        self.changed = asyncio.Condition()

    async def send(self, event: Event) -> None:
        self.sent.append(event.id)
        try:
            if self.before_send is not None:
                await self.before_send(event)
            queue = self.script.get(event.id)
            outcome = queue.pop(0) if queue else self.default
            if outcome is not None:
                raise outcome
            self.delivered.append(event.id)
        finally:
            async with self.changed:
                self.changed.notify_all()

    async def send_digest(self, events: Sequence[Event]) -> None:
        self.digests.append([e.id for e in events])
        if self.default is not None:
            raise self.default
        self.delivered.extend(e.id for e in events)

    async def aclose(self) -> None:
        return None

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(predicate)


def retryable(retry_after: float | None = None) -> RetryableDeliveryError:
    return RetryableDeliveryError("receiver answered HTTP 503", status=503, retry_after=retry_after)


_LIMITS: dict[str, Any] = {
    "max_attempts": 20,
    "max_age_seconds": 3 * 86400,
    "initial_backoff_seconds": 5.0,
    "max_backoff_seconds": 6 * 3600,
    "concurrency": 4,
}


def policy(**changes: Any) -> DeliveryPolicy:
    """The tests' policy, with ``changes`` to its config's limits."""
    return DeliveryPolicy(DeliveryConfig(**{**_LIMITS, **changes}))


POLICY = policy()


def dispatcher(
    store: StoreUnderTest,
    sinks: Sequence[Any],
    clock: FakeClock,
    policy: DeliveryPolicy = POLICY,
    **kw: Any,
) -> Dispatcher:
    return Dispatcher(
        store,
        sinks,
        policy,
        clock=clock.time,
        monotonic=clock.monotonic,
        rng=random.Random(7),
        **kw,
    )


# -- the retry schedule ----------------------------------------------------------------------


def test_first_retry_is_immediate_then_delays_grow_to_the_cap() -> None:
    rng = random.Random(1)
    assert POLICY.next_delay(1, None, rng) == 0.0
    for attempts in range(2, 30):
        ceiling = min(5.0 * 2 ** (attempts - 2), 6 * 3600.0)
        assert ceiling / 2 <= POLICY.next_delay(attempts, None, rng) <= ceiling
    assert POLICY.next_delay(40, None, rng) <= 6 * 3600.0


def test_retry_after_is_a_floor_bounded_by_max_backoff() -> None:
    rng = random.Random(1)
    assert POLICY.next_delay(1, 30.0, rng) == 30.0
    assert POLICY.next_delay(8, 1.0, rng) >= 5.0 * 2**6 / 2
    assert POLICY.next_delay(2, 10**9, rng) == 6 * 3600.0


def test_policy_decides_by_the_limits_of_the_config_it_is_given() -> None:
    config = DeliveryConfig(
        max_attempts=3,
        max_age_seconds=60.0,
        initial_backoff_seconds=1.0,
        max_backoff_seconds=10.0,
        concurrency=2,
    )
    limits = DeliveryPolicy(config)
    assert limits.config is config

    def decide(attempts: int, age: float, **hints: Any) -> Retry | DeadLetter:
        now = 1000.0
        failure: dict[str, Any] = {"permanent": False, "retry_after": None, **hints}
        return limits.decide(
            attempts=attempts, enqueued_at=now - age, now=now, rng=random.Random(1), **failure
        )

    assert decide(1, 0.0) == Retry(at=1000.0, delay=0.0)  # the first retry is immediate
    retry = decide(2, 0.0)
    assert isinstance(retry, Retry) and 0.5 <= retry.delay <= 1.0  # initial_backoff_seconds
    assert retry.at == 1000.0 + retry.delay
    assert decide(2, 0.0, retry_after=99.0) == Retry(at=1010.0, delay=10.0)  # max_backoff
    assert decide(3, 0.0) == DeadLetter("max_attempts")
    assert decide(2, 60.0) == DeadLetter("max_age")
    assert decide(1, 0.0, permanent=True) == DeadLetter("permanent")


def test_policy_of_the_default_config_has_its_defaults() -> None:
    defaults = DeliveryPolicy(DeliveryConfig())
    retry: dict[str, Any] = {"enqueued_at": 0.0, "now": 0.0, "permanent": False}
    retry["retry_after"] = None
    assert isinstance(defaults.decide(attempts=19, **retry), Retry)
    assert defaults.decide(attempts=20, **retry) == DeadLetter("max_attempts")
    assert defaults.decide(attempts=1, **{**retry, "now": 3 * 86400.0}) == DeadLetter("max_age")
    assert defaults.hold_seconds(1, None) == 5.0  # initial_backoff_seconds, never immediate


def test_run_result_totals_and_ok() -> None:
    result = RunResult({"a": SinkResult(delivered=2), "b": SinkResult(delivered=1, failed=1)})
    assert (result.delivered, result.failed, result.dead, result.pending_left) == (3, 1, 0, 0)
    assert not result.ok
    assert RunResult({"a": SinkResult(delivered=5)}).ok


# -- outcomes --------------------------------------------------------------------------------


async def test_failure_is_retried_at_once_then_after_a_growing_delay(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", default=retryable())
    d = dispatcher(store, [sink], clock)

    result = await d.run_once()
    assert sink.sent == [event.id, event.id]  # the immediate retry came in the same pass
    assert result.sinks["hook"] == SinkResult(failed=2, pending_left=1)
    (row,) = await pending(store, "hook")
    first_wait = row.next_attempt_at - T0
    assert row.attempts == 2
    assert 2.5 <= first_wait <= 5.0

    clock.advance(row.next_attempt_at - 0.001 - clock.time())
    await d.run_once()
    assert len(sink.sent) == 2  # not due yet
    clock.advance(row.next_attempt_at - clock.time())
    await d.run_once()
    (row,) = await pending(store, "hook")
    assert row.attempts == 3
    assert 5.0 <= row.next_attempt_at - clock.time() <= 10.0


async def test_retry_after_hint_is_honoured(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", script={event.id: [retryable(retry_after=120.0)]})
    d = dispatcher(store, [sink], clock)

    await d.run_once()
    (row,) = await pending(store, "hook")
    assert row.next_attempt_at == pytest.approx(T0 + 120.0)
    clock.advance(T0 + 119.0 - clock.time())
    await d.run_once()
    assert sink.sent == [event.id]
    clock.advance(T0 + 120.0 - clock.time())
    result = await d.run_once()
    assert sink.delivered == [event.id]
    assert result.sinks["hook"] == SinkResult(delivered=1)


async def test_dead_letter_after_max_attempts(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", default=retryable())
    d = dispatcher(store, [sink], clock, policy(max_attempts=3))

    with capture_logs() as logs:
        for _ in range(5):
            await d.run_once()
            clock.advance(3600)
    assert sink.sent == [event.id] * 3
    assert await pending(store, "hook") == []
    (dead,) = await store.dead_letters("hook")
    assert dead.attempts == 3
    assert dead.last_status == 503
    (entry,) = [e for e in logs if e["event"] == "delivery_dead_lettered"]
    assert entry["reason"] == "max_attempts"
    assert entry["log_level"] == "error"
    assert entry["event_id"] == event.id


async def test_dead_letter_after_max_age(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", default=retryable())
    d = dispatcher(store, [sink], clock, policy(max_age_seconds=100.0))

    await d.run_once()
    assert len(await pending(store, "hook")) == 1
    clock.advance(T0 + 100.0 - clock.time())
    with capture_logs() as logs:
        result = await d.run_once()
    assert result.sinks["hook"].dead == 1
    assert len(await store.dead_letters("hook")) == 1
    assert [e["reason"] for e in logs if e["event"] == "delivery_dead_lettered"] == ["max_age"]


async def test_permanent_error_dead_letters_at_once(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    first, second = make_event(session_sid=session(1)), make_event(session_sid=session(1))
    await enqueue(store, [first, second], ["hook"], T0)
    sink = ScriptedSink("hook", script={first.id: [PermanentDeliveryError("HTTP 400", status=400)]})
    result = await dispatcher(store, [sink], clock).run_once()
    assert sink.sent == [first.id, second.id]  # the dead head no longer blocks its session
    assert [d.event.id for d in await store.dead_letters("hook")] == [first.id]
    assert result.sinks["hook"] == SinkResult(delivered=1, dead=1)


async def test_gone_receiver_disables_the_sink_and_keeps_its_events(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n)) for n in range(3)]
    await enqueue(store, events, ["gone", "fine"], T0)
    gone = ScriptedSink("gone", default=SinkDisabledError("HTTP 410", status=410))
    fine = ScriptedSink("fine")
    d = dispatcher(store, [gone, fine], clock, policy(concurrency=1))

    with capture_logs() as logs:
        result = await d.run_once()
    assert gone.sent == [events[0].id]
    assert result.sinks["gone"] == SinkResult(pending_left=3, disabled=True)
    assert result.sinks["fine"].delivered == 3
    assert [d.attempts for d in await pending(store, "gone")] == [0, 0, 0]
    assert d.disabled_sinks == {"gone"}
    assert [e["sink"] for e in logs if e["event"] == "sink_disabled"] == ["gone"]

    await d.run_once(ignore_timers=True)
    assert gone.sent == [events[0].id]  # never called again by this dispatcher


async def test_disabling_answer_is_noted_once_with_its_first_time(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    await enqueue(store, [make_event(session_sid=session(n)) for n in range(2)], ["gone"], T0)
    gone = ScriptedSink("gone", default=SinkDisabledError("HTTP 404: webhook deleted", status=404))

    await dispatcher(store, [gone], clock).run_once()
    clock.advance(60)
    await dispatcher(store, [gone], clock).run_once()  # a restart meets the same answer

    assert await store.disabled_sinks() == [
        DisabledSink(
            "gone", since=T0, last_at=T0 + 60, status=404, reason="HTTP 404: webhook deleted"
        )
    ]
    assert _sample("poller_sink_disabled", sink="gone") == 1


async def test_a_sink_that_answers_again_loses_its_disabled_note(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    await enqueue(store, [make_event(session_sid=session(0))], ["hook"], T0)
    await store.record_sink_disabled("hook", status=410, reason="HTTP 410", now=T0 - 10)

    with capture_logs() as logs:
        result = await dispatcher(store, [ScriptedSink("hook")], clock).run_once()

    assert result.sinks["hook"].delivered == 1
    assert await store.disabled_sinks() == []
    assert "sink_enabled" in [e["event"] for e in logs]
    assert _sample("poller_sink_disabled", sink="hook") == 0


async def test_clearing_the_note_resumes_a_disabled_sink_in_the_running_dispatcher(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(0)), make_event(session_sid=session(1))]
    await enqueue(store, events, ["mail"], T0)
    mail = ScriptedSink("mail", script={events[0].id: [SinkDisabledError("SMTP 535", status=535)]})
    d = dispatcher(store, [mail], clock, policy(concurrency=1))
    await d.run_once()
    assert d.disabled_sinks == {"mail"}

    await store.clear_sink_disabled("mail")  # what `poller outbox retry --sink mail` does
    with capture_logs() as logs:
        result = await d.run_once()

    assert result.sinks["mail"].delivered == 2
    assert d.disabled_sinks == frozenset()
    assert [e["sink"] for e in logs if e["event"] == "sink_resumed"] == ["mail"]


async def test_unexpected_sink_exception_is_retried_and_not_logged_verbatim(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", script={event.id: [ValueError("token=hunter2"), None]})
    with capture_logs() as logs:
        result = await dispatcher(store, [sink], clock).run_once()
    assert sink.delivered == [event.id]  # the immediate retry succeeded
    assert result.sinks["hook"] == SinkResult(delivered=1, failed=1)
    assert "hunter2" not in repr(logs)
    assert any(e["event"] == "sink_raised" and e["error_type"] == "ValueError" for e in logs)


async def test_failure_log_names_sink_event_status_attempts_and_wait(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", script={event.id: [retryable(retry_after=42.0)]})
    with capture_logs() as logs:
        await dispatcher(store, [sink], clock).run_once()
    (entry,) = [e for e in logs if e["event"] == "delivery_failed"]
    assert entry["log_level"] == "warning"
    assert (entry["sink"], entry["event_id"], entry["status"]) == ("hook", event.id, 503)
    assert (entry["attempts"], entry["next_attempt_in"]) == (1, 42.0)


# -- isolation and ordering ------------------------------------------------------------------


async def test_a_stuck_sink_does_not_hold_back_another(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n)) for n in range(3)]
    await enqueue(store, events, ["stuck", "fine"], T0)
    fine = ScriptedSink("fine")

    async def wait_for_fine(event: Event) -> None:
        await fine.wait_until(lambda: len(fine.delivered) == 3)

    stuck = ScriptedSink("stuck", default=retryable(60.0), before_send=wait_for_fine)
    result = await dispatcher(store, [stuck, fine], clock).run_once()
    assert result.sinks["fine"].delivered == 3
    assert result.sinks["stuck"].failed == 3


async def test_a_session_is_delivered_in_order_even_when_its_head_fails(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    created = make_event(session_sid=session(1))
    updated = make_event(session_sid=session(1), event_type=EventType.UPDATED)
    other = make_event(session_sid=session(2))
    await enqueue(store, [created, updated, other], ["hook"], T0)
    sink = ScriptedSink("hook", script={created.id: [retryable(), retryable(), None]})
    d = dispatcher(store, [sink], clock)

    await d.run_once()
    assert sink.delivered == [other.id]  # another session never waits
    assert updated.id not in sink.sent
    (head,) = (await pending(store, "hook"))[:1]
    clock.advance(head.next_attempt_at - clock.time())
    await d.run_once()
    assert sink.delivered == [other.id, created.id, updated.id]


async def test_sends_across_sessions_are_concurrent_up_to_the_limit(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    await enqueue(store, [make_event(session_sid=session(n)) for n in range(10)], ["hook"], T0)
    in_flight = 0
    peak = 0
    release = asyncio.Event()

    async def hold(event: Event) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if peak == 3:
            release.set()
        await release.wait()
        in_flight -= 1

    sink = ScriptedSink("hook", before_send=hold)
    result = await dispatcher(store, [sink], clock, policy(concurrency=3)).run_once()
    assert result.sinks["hook"].delivered == 10
    assert peak == 3


# -- acks: one transaction per batch ---------------------------------------------------------


async def test_a_batch_of_heads_is_acked_in_one_transaction(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n)) for n in range(10)]
    await enqueue(store, events, ["hook"], T0)
    counting = CountingAcks(store)
    sink = ScriptedSink("hook")
    result = await dispatcher(counting, [sink], clock).run_once()
    assert result.sinks["hook"] == SinkResult(delivered=10)
    assert [len(ids) for ids in counting.acks] == [10]
    assert await store.pending_count("hook") == 0


async def test_a_sessions_next_event_is_sent_only_after_its_head_was_acked(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n % 3)) for n in range(9)]
    await enqueue(store, sorted(events, key=lambda e: e.session_sid), ["hook"], T0)
    counting = CountingAcks(store)
    sent_while_not_head: list[str] = []

    async def check_head(event: Event) -> None:
        heads = {d.event.id for d in await store.due("hook", None, 100)}
        if event.id not in heads:
            sent_while_not_head.append(event.id)

    sink = ScriptedSink("hook", before_send=check_head)
    result = await dispatcher(counting, [sink], clock).run_once()
    assert result.sinks["hook"] == SinkResult(delivered=9)
    assert sent_while_not_head == []
    for n in range(3):
        in_session = [e.id for e in events if e.session_sid == session(n)]
        assert [i for i in sink.delivered if i in in_session] == in_session
    assert [len(ids) for ids in counting.acks] == [3, 3, 3]  # one head per session per batch


async def test_a_deadline_acks_what_its_batch_sent_before_it_ended(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    await enqueue(store, [make_event(session_sid=session(n)) for n in range(6)], ["hook"], T0)

    async def take_ten_seconds(event: Event) -> None:
        clock.advance(10.0)

    counting = CountingAcks(store)
    sink = ScriptedSink("hook", before_send=take_ten_seconds)
    d = dispatcher(counting, [sink], clock, policy(concurrency=1))
    result = await d.run_once(deadline=T0 + 25.0)
    assert result.sinks["hook"] == SinkResult(delivered=3, pending_left=3)
    assert [len(ids) for ids in counting.acks] == [3]
    assert {d.event.id for d in await pending(store, "hook")}.isdisjoint(sink.delivered)


async def test_sends_of_a_batch_are_acked_even_when_the_store_fails_on_another(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    failing, fine = make_event(session_sid=session(1)), make_event(session_sid=session(2))
    await enqueue(store, [failing, fine], ["hook"], T0)

    class BrokenRetry(CountingAcks):
        async def retry_later(
            self,
            delivery_id: int,
            *,
            next_attempt_at: float,
            error: str,
            status: int | None,
            attempt: Attempt | None = None,
        ) -> None:
            raise StateError("disk I/O error")

    sink = ScriptedSink("hook", script={failing.id: [retryable()]})
    with pytest.raises(StateError, match="disk I/O"):
        await dispatcher(BrokenRetry(store), [sink], clock).run_once()
    assert sink.delivered == [fine.id]
    assert [d.event.id for d in await pending(store, "hook")] == [failing.id]


async def test_cancelling_mid_batch_acks_the_sends_that_finished(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    first, second = make_event(session_sid=session(1)), make_event(session_sid=session(2))
    await enqueue(store, [first, second], ["hook"], T0)
    stuck = asyncio.Event()

    async def hold_second(event: Event) -> None:
        if event.id == second.id:
            stuck.set()
            await asyncio.Event().wait()  # never answers

    sink = ScriptedSink("hook", before_send=hold_second)
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(dispatcher(store, [sink], clock).run_forever(stop, wake))
    async with asyncio.timeout(5):
        await stuck.wait()
    await sink.wait_until(lambda: sink.delivered == [first.id])
    loop.cancel()  # what the daemon does once delivery.shutdown_timeout_seconds has passed
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert [d.event.id for d in await pending(store, "hook")] == [second.id]


# -- modes: once, deadlines, digests ---------------------------------------------------------


async def test_ignore_timers_attempts_every_delivery_exactly_once(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n)) for n in range(5)]
    await enqueue(store, events, ["hook"], T0)
    sink = ScriptedSink("hook", default=retryable(retry_after=3600.0))
    d = dispatcher(store, [sink], clock, batch_size=2)
    await d.run_once()  # every head now waits an hour
    assert sorted(sink.sent) == sorted(e.id for e in events)

    sink.sent.clear()
    result = await d.run_once(ignore_timers=True)
    assert sorted(sink.sent) == sorted(e.id for e in events)
    assert result.sinks["hook"] == SinkResult(failed=5, pending_left=5)
    assert not result.ok


async def test_ignore_timers_delivers_a_whole_session_queue(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(1)) for _ in range(4)]
    await enqueue(store, events, ["hook"], T0)
    sink = ScriptedSink("hook")
    result = await dispatcher(store, [sink], clock).run_once(ignore_timers=True)
    assert sink.delivered == [e.id for e in events]
    assert result.ok


async def test_deadline_stops_new_attempts_and_leaves_the_rest_pending(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    await enqueue(store, [make_event(session_sid=session(n)) for n in range(6)], ["hook"], T0)

    async def take_ten_seconds(event: Event) -> None:
        clock.advance(10.0)

    sink = ScriptedSink("hook", before_send=take_ten_seconds)
    d = dispatcher(store, [sink], clock, policy(concurrency=1))
    result = await d.run_once(ignore_timers=True, deadline=T0 + 25.0)
    assert len(sink.delivered) == 3
    assert result.sinks["hook"] == SinkResult(delivered=3, pending_left=3)


async def test_more_due_than_the_threshold_goes_out_as_one_digest(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n)) for n in range(4)]
    await enqueue(store, events, ["chat"], T0)
    sink = ScriptedSink("chat", digest_threshold=3)
    result = await dispatcher(store, [sink], clock).run_once()
    assert sink.digests == [[e.id for e in events]]
    assert sink.sent == []
    assert result.sinks["chat"] == SinkResult(delivered=4)
    assert await store.pending_count("chat") == 0


async def test_one_sessions_burst_past_the_threshold_is_one_digest_in_order(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(1)) for _ in range(6)]
    await enqueue(store, events, ["chat"], T0)
    sink = ScriptedSink("chat", digest_threshold=3)
    result = await dispatcher(store, [sink], clock).run_once()
    assert sink.digests == [[e.id for e in events]]
    assert result.sinks["chat"] == SinkResult(delivered=6)


async def test_up_to_the_threshold_events_go_out_one_by_one(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n)) for n in range(3)]
    await enqueue(store, events, ["chat"], T0)
    sink = ScriptedSink("chat", digest_threshold=3)
    await dispatcher(store, [sink], clock).run_once()
    assert sink.digests == []
    assert sorted(sink.delivered) == sorted(e.id for e in events)


async def test_a_failed_digest_schedules_every_event_again(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n)) for n in range(4)]
    await enqueue(store, events, ["chat"], T0)
    sink = ScriptedSink("chat", digest_threshold=2, default=retryable(retry_after=60.0))
    result = await dispatcher(store, [sink], clock).run_once()
    assert len(sink.digests) == 1
    assert result.sinks["chat"] == SinkResult(failed=4, pending_left=4)
    assert [d.attempts for d in await store.due("chat", None, 10)] == [1, 1, 1, 1]
    assert await store.due("chat", T0 + 59.0, 10) == []


# -- metrics ---------------------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_metrics_count_outcomes_and_gauge_the_outbox(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    sink_name = f"metrics-{id(store)}"
    ok, bad, later = (make_event(session_sid=session(n)) for n in range(3))
    await enqueue(store, [ok, bad, later], [sink_name], T0)
    sink = ScriptedSink(
        sink_name,
        script={
            bad.id: [PermanentDeliveryError("HTTP 400", status=400)],
            later.id: [retryable(60.0)],
        },
    )
    success_before = _sample("poller_deliveries_total", sink=sink_name, outcome="success")
    await dispatcher(store, [sink], clock).run_once()
    assert _sample("poller_deliveries_total", sink=sink_name, outcome="success") == (
        success_before + 1
    )
    assert _sample("poller_deliveries_total", sink=sink_name, outcome="dead") >= 1
    assert _sample("poller_deliveries_total", sink=sink_name, outcome="retry") >= 1
    assert _sample("poller_outbox_pending", sink=sink_name) == 1
    assert _sample("poller_dead_letters", sink=sink_name) == 1
    assert _sample("poller_outbox_oldest_age_seconds") == 0.0  # enqueued "now"


async def test_the_outbox_gauge_follows_a_long_drain(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    sink_name = f"gauge-{id(store)}"
    events = [make_event(session_sid=session(n % 2)) for n in range(6)]
    await enqueue(store, sorted(events, key=lambda e: e.session_sid), [sink_name], T0)
    seen: list[float] = []

    async def slow_send(event: Event) -> None:
        seen.append(_sample("poller_outbox_pending", sink=sink_name))
        clock.advance(1.0)  # each batch of two heads takes past the refresh interval

    sink = ScriptedSink(sink_name, before_send=slow_send)
    await dispatcher(store, [sink], clock).run_once()
    assert seen[2::2] == [4.0, 2.0]  # read again after each batch's ack, mid-drain
    assert _sample("poller_outbox_pending", sink=sink_name) == 0.0


# -- the daemon loop -------------------------------------------------------------------------


async def test_run_forever_delivers_on_wake_and_returns_on_stop(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    sink = ScriptedSink("hook")
    d = dispatcher(store, [sink], clock, idle_poll_seconds=60.0)
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(d.run_forever(stop, wake))

    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    wake.set()
    await sink.wait_until(lambda: sink.delivered == [event.id])
    stop.set()
    async with asyncio.timeout(5):
        await loop
    assert await store.pending_count("hook") == 0


async def test_run_forever_retries_when_the_timer_runs_out(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", script={event.id: [retryable(), retryable(), None]})
    d = dispatcher(store, [sink], clock, idle_poll_seconds=0.01)
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(d.run_forever(stop, wake))

    await sink.wait_until(lambda: len(sink.sent) == 2)
    clock.advance(10.0)  # past the second retry's timer; no wake-up is given
    await sink.wait_until(lambda: sink.delivered == [event.id])
    stop.set()
    async with asyncio.timeout(5):
        await loop


async def test_stop_lets_the_send_in_flight_finish(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    first, second = make_event(session_sid=session(1)), make_event(session_sid=session(1))
    await enqueue(store, [first, second], ["hook"], T0)
    started, release = asyncio.Event(), asyncio.Event()

    async def hold(event: Event) -> None:
        started.set()
        await release.wait()

    sink = ScriptedSink("hook", before_send=hold)
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(dispatcher(store, [sink], clock).run_forever(stop, wake))
    async with asyncio.timeout(5):
        await started.wait()
    stop.set()
    await asyncio.sleep(0)
    assert not loop.done()
    release.set()
    async with asyncio.timeout(5):
        await loop
    assert sink.delivered == [first.id]  # the in-flight send was acked; nothing new started
    assert [d.event.id for d in await pending(store, "hook")] == [second.id]


async def test_a_store_failure_surfaces_after_every_sink_has_stopped() -> None:
    class BrokenAck(MemoryOutbox):
        async def ack(
            self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
        ) -> None:
            raise StateError("disk I/O error")

    store = BrokenAck()
    events = [make_event(session_sid=session(n)) for n in range(2)]
    await enqueue(store, events, ["a", "b"], T0)
    a, b = ScriptedSink("a"), ScriptedSink("b")
    with pytest.raises(StateError, match="disk I/O"):
        await dispatcher(store, [a, b], FakeClock(wall=T0, monotonic=T0)).run_once()
    assert sorted(a.sent) == sorted(b.sent) == sorted(e.id for e in events)
