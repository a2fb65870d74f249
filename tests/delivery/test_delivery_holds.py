"""A state file that cannot be written: deliveries back off in memory, the loop goes on."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from poller.delivery.holds import Holds
from poller.errors import StateError
from poller.observe.metrics import REGISTRY
from poller.state.history import Attempt
from poller.state.sqlite.store import SqliteStore
from tests.clock import FakeClock
from tests.delivery.test_delivery import (
    POLICY,
    T0,
    CountingAcks,
    ScriptedSink,
    dispatcher,
    enqueue,
    pending,
    retryable,
    session,
)
from tests.sink_contract_cases import make_event

DISK_FULL = "state file state.db: database or disk is full"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "state.db") as opened:
        yield opened


class FullDisk(CountingAcks):
    """A store that reads, and cannot write while ``full``."""

    full = True

    async def retry_later(
        self,
        delivery_id: int,
        *,
        next_attempt_at: float,
        error: str,
        status: int | None,
        attempt: Attempt | None = None,
    ) -> None:
        if self.full:
            raise StateError(DISK_FULL)
        await self.inner.retry_later(
            delivery_id,
            next_attempt_at=next_attempt_at,
            error=error,
            status=status,
            attempt=attempt,
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
        if self.full:
            raise StateError(DISK_FULL)
        await self.inner.dead_letter(
            delivery_id, error=error, status=status, now=now, attempt=attempt
        )

    async def ack(
        self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
    ) -> None:
        if self.full:
            raise StateError(DISK_FULL)
        await super().ack(delivery_ids, history=history)


def _pending_gauge(sink: str) -> float | None:
    return REGISTRY.get_sample_value("poller_outbox_pending", {"sink": sink})


def test_holds_count_attempts_and_expire_on_their_clock() -> None:
    clock = FakeClock(wall=100.0, monotonic=100.0)
    holds = Holds(clock.monotonic)
    holds.hold(7, attempts=3, seconds=10.0)
    assert holds.held(7) and not holds.held(8)
    assert holds.attempts(7, stored=1) == 3 and holds.attempts(7, stored=5) == 5
    clock.advance(110.0 - clock.time())
    assert not holds.held(7)
    holds.release([7])
    assert len(holds) == 0 and holds.attempts(7, stored=1) == 1


async def test_a_retry_that_cannot_be_stored_waits_its_backoff_in_memory(
    store: SqliteStore,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event(session_sid=session(1))
    await enqueue(store, [event], ["hook"], T0)
    full = FullDisk(store)
    sink = ScriptedSink("hook", default=retryable(retry_after=30.0))
    d = dispatcher(full, [sink], clock)
    with capture_logs() as logs, pytest.raises(StateError, match="disk is full"):
        await d.run_once()
    assert sink.sent == [event.id]
    (held,) = [e for e in logs if e["event"] == "delivery_held"]
    assert held["next_attempt_in"] == 30.0 and held["attempts"] == 1
    assert _pending_gauge("hook") == 1.0  # the failed pass still says what is pending

    for _ in range(5):  # without the hold, every pass would POST it again
        await d.run_once()
    assert sink.sent == [event.id]

    clock.advance(30.0)
    full.full = False
    sink.default = None
    result = await d.run_once()
    assert result.delivered == 1 and sink.delivered == [event.id]
    assert await pending(store, "hook") == [] and _pending_gauge("hook") == 0.0


async def test_holds_back_off_further_while_the_disk_stays_full(store: SqliteStore) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event(session_sid=session(1))
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", default=retryable())
    d = dispatcher(FullDisk(store), [sink], clock)
    waits = []
    for _ in range(5):
        with capture_logs() as logs, pytest.raises(StateError):
            await d.run_once()
        (held,) = [e for e in logs if e["event"] == "delivery_held"]
        waits.append(held["next_attempt_in"])
        clock.advance(held["next_attempt_in"] + 0.001)  # it is rounded in the log
    assert len(sink.sent) == 5
    assert waits[0] == POLICY.config.initial_backoff_seconds
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))
    assert waits[-1] >= 20.0  # the policy's 4th retry: at least 40 / 2


async def test_a_send_whose_ack_cannot_be_stored_is_not_sent_again_at_once(
    store: SqliteStore,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event(session_sid=session(1))
    await enqueue(store, [event], ["hook"], T0)
    full = FullDisk(store)
    sink = ScriptedSink("hook")
    d = dispatcher(full, [sink], clock)
    with pytest.raises(StateError):
        await d.run_once()
    await d.run_once()
    assert sink.sent == [event.id]
    full.full = False
    clock.advance(POLICY.config.initial_backoff_seconds)
    assert (await d.run_once()).delivered == 1
    assert sink.sent == [event.id, event.id]  # at least once: sent again, same id


async def test_the_daemon_loop_logs_each_failed_pass_in_one_line_and_goes_on(
    store: SqliteStore,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event(session_sid=session(1))
    await enqueue(store, [event], ["hook"], T0)
    full = FullDisk(store)
    sink = ScriptedSink("hook", default=retryable(retry_after=3600.0))
    d = dispatcher(full, [sink], clock, idle_poll_seconds=0.01)
    stop, wake = asyncio.Event(), asyncio.Event()
    with capture_logs() as logs:
        loop = asyncio.create_task(d.run_forever(stop, wake))
        await sink.wait_until(lambda: len(sink.sent) == 1)
        for _ in range(3):
            wake.set()
            await asyncio.sleep(0)
        stop.set()
        async with asyncio.timeout(5):
            await loop  # no exception: the loop survived the full disk
    (failed,) = [e for e in logs if e["event"] == "delivery_loop_failed"]
    assert failed["error"] == DISK_FULL and failed["held"] == 1 and failed["next_pass_in"] == 1.0
    assert sink.sent == [event.id]


async def test_every_event_of_a_failed_digest_is_held_not_only_the_first(
    store: SqliteStore,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n)) for n in range(3)]
    await enqueue(store, events, ["slack"], T0)
    sink = ScriptedSink("slack", default=retryable(), digest_threshold=1)
    d = dispatcher(FullDisk(store), [sink], clock)
    with pytest.raises(StateError):
        await d.run_once()
    await d.run_once()
    assert sink.digests == [[e.id for e in events]]  # not sent again, not even a part of it
    clock.advance(POLICY.config.initial_backoff_seconds)
    with pytest.raises(StateError):
        await d.run_once()
    assert len(sink.digests) == 2


async def test_a_held_event_holds_back_the_events_behind_it_in_a_digest(store: SqliteStore) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    first, second = make_event(session_sid=session(1)), make_event(session_sid=session(1))
    await enqueue(store, [first, second], ["slack"], T0)
    (head,) = await store.due("slack", None, 10)
    sink = ScriptedSink("slack", digest_threshold=0)
    d = dispatcher(store, [sink], clock)
    d._holds.hold(head.id, attempts=1, seconds=10.0)  # as after a failed write of its retry
    await d.run_once()
    assert sink.digests == [] and sink.sent == []
    clock.advance(10.0)
    await d.run_once()
    assert sink.digests == [[first.id, second.id]]
