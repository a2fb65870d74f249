"""The dispatcher reports every attempt to the history (or none, with history_seconds 0).

Runs on the real memory backend, whose history the state contract suite holds to SQLite's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosmtplib
import httpx
import pytest

from poller.delivery.attempts import error_class
from poller.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.events import Event
from poller.state.history import Attempt
from poller.state.memory.store import MemoryStore
from poller.state.views import HistoryQuery
from tests.clock import FakeClock
from tests.delivery.test_delivery import (
    SERVICE,
    T0,
    ScriptedSink,
    dispatcher,
    policy,
    retryable,
    session,
)
from tests.sink_contract_cases import make_event

LATENCY = 0.25


class Spy(MemoryStore):
    """The memory state, noting the keyword arguments of every write the dispatcher makes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, set[str]]] = []

    async def ack(self, delivery_ids: Sequence[int], **kw: Any) -> None:
        self.writes.append(("ack", set(kw)))
        await super().ack(delivery_ids, **kw)

    async def retry_later(self, delivery_id: int, **kw: Any) -> None:
        self.writes.append(("retry_later", {k for k in kw if k == "attempt"}))
        await super().retry_later(delivery_id, **kw)

    async def dead_letter(self, delivery_id: int, **kw: Any) -> None:
        self.writes.append(("dead_letter", {k for k in kw if k == "attempt"}))
        await super().dead_letter(delivery_id, **kw)

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        self.writes.append(("record_attempts", set()))
        await super().record_attempts(attempts)


async def _enqueue(store: MemoryStore, events: Sequence[Event], sink: str = "hook") -> None:
    for event in events:
        await store.commit_poll(
            SERVICE, event.session_sid, fetched={}, events=[(event, [sink])], now=T0
        )


def _slow(clock: FakeClock) -> Any:
    """A ``before_send`` that makes every send take ``LATENCY`` seconds."""

    async def before_send(_event: Event) -> None:
        clock.advance(LATENCY)

    return before_send


async def test_attempts_are_kept_with_their_outcome_status_error_and_latency() -> None:
    clock = FakeClock(wall=T0, monotonic=50.0)
    store = Spy()
    flaky, broken = make_event(session_sid=session(1)), make_event(session_sid=session(2))
    await _enqueue(store, [flaky, broken])
    sink = ScriptedSink(
        "hook",
        script={flaky.id: [retryable()], broken.id: [PermanentDeliveryError("x", status=400)]},
        before_send=_slow(clock),
    )
    await dispatcher(store, [sink], clock, policy(concurrency=1)).run_once()

    kept = [
        (a.event_id, a.outcome, a.status, a.error, a.latency_seconds)
        for a in reversed(await store.recent_attempts("hook", 10))
    ]
    assert kept == [
        (flaky.id, "retry", 503, "HTTP 503", LATENCY),
        (broken.id, "dead", 400, "HTTP 400", LATENCY),
        (flaky.id, "delivered", None, None, LATENCY),
    ]
    (first, *_) = reversed(await store.recent_attempts("hook", 10))
    assert first.at == T0  # the wall clock when the send began, not when it ended
    states = {k.event.id: k.sinks[0].state for k in await store.history(HistoryQuery())}
    assert states == {flaky.id: "delivered", broken.id: "dead"}


async def test_a_disabling_answer_is_kept_and_its_deliveries_stay_pending() -> None:
    clock = FakeClock(wall=T0, monotonic=50.0)
    store = MemoryStore()
    event = make_event(session_sid=session(1))
    await _enqueue(store, [event])
    gone = ScriptedSink("hook", default=SinkDisabledError("HTTP 410", status=410))
    await dispatcher(store, [gone], clock).run_once()

    (attempt,) = await store.recent_attempts("hook", 10)
    assert (attempt.outcome, attempt.status, attempt.error) == ("disabled", 410, "HTTP 410")
    (kept,) = await store.history(HistoryQuery())
    assert kept.sinks[0].state == "pending"
    assert kept.sinks[0].attempts == 1


async def test_a_digest_keeps_one_attempt_per_event_it_carried() -> None:
    clock = FakeClock(wall=T0, monotonic=50.0)
    store = MemoryStore()
    events = [make_event(session_sid=session(1)) for _ in range(3)]
    await _enqueue(store, events)
    sink = ScriptedSink("hook", digest_threshold=1)
    await dispatcher(store, [sink], clock).run_once()

    assert sink.digests == [[e.id for e in events]]
    attempts = await store.recent_attempts("hook", 10)
    assert sorted(a.event_id for a in attempts) == sorted(e.id for e in events)
    assert {(a.outcome, a.at) for a in attempts} == {("delivered", T0)}


async def test_history_seconds_zero_passes_no_attempt_and_keeps_nothing() -> None:
    clock = FakeClock(wall=T0, monotonic=50.0)
    store = Spy()
    fine, flaky = make_event(session_sid=session(1)), make_event(session_sid=session(2))
    dead = make_event(session_sid=session(3))
    await _enqueue(store, [fine, flaky, dead])
    sink = ScriptedSink(
        "hook",
        script={flaky.id: [retryable()], dead.id: [PermanentDeliveryError("x", status=400)]},
    )
    await dispatcher(store, [sink], clock, policy(history_seconds=0)).run_once()

    assert sorted(sink.delivered) == sorted([fine.id, flaky.id])
    assert {name for name, _ in store.writes} == {"ack", "retry_later", "dead_letter"}
    assert all(kw == set() for _, kw in store.writes)  # no history=, no attempt=
    assert await store.recent_attempts("hook", 10) == []
    assert await store.kept_events() == 1  # the dead letter's event only, as before


async def test_history_seconds_zero_records_no_disabling_answer() -> None:
    clock = FakeClock(wall=T0, monotonic=50.0)
    store = Spy()
    await _enqueue(store, [make_event(session_sid=session(1))])
    gone = ScriptedSink("hook", default=SinkDisabledError("HTTP 410", status=410))
    await dispatcher(store, [gone], clock, policy(history_seconds=0)).run_once()
    assert store.writes == []
    assert await store.recent_attempts("hook", 10) == []


def _raised_from(exc: Exception, cause: BaseException) -> Exception:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RetryableDeliveryError("answered HTTP 503", status=503), "HTTP 503"),
        (
            _raised_from(
                PermanentDeliveryError("email sink 'm': SMTP 535", status=535),
                aiosmtplib.SMTPResponseException(535, "authentication failed"),
            ),
            "SMTP 535",
        ),
        (
            _raised_from(
                RetryableDeliveryError("webhook sink 'w': no answer (https://u:p@host/x)"),
                httpx.ReadTimeout("timed out"),
            ),
            "ReadTimeout",
        ),
        (RetryableDeliveryError("paused"), "RetryableDeliveryError"),
        (ValueError("https://secret@host"), "ValueError"),
    ],
)
def test_error_class_is_short_and_names_no_url(exc: Exception, expected: str) -> None:
    assert error_class(exc) == expected
