"""The dispatcher delivers only the Services its replica owns; a fenced settle loses nothing.

On the memory backend (``poller.state.memory``), with a fencing stand-in for PostgreSQL's
lease check: a write that touches a lost Service raises ``FencedError`` and writes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from poller.delivery.dispatcher import Dispatcher
from poller.errors import FencedError
from poller.events import Event
from poller.observe.metrics import REGISTRY
from poller.state.history import Attempt
from poller.state.memory.store import MemoryStore
from poller.state.models import Delivery
from tests.clock import FakeClock
from tests.delivery.test_delivery import POLICY, T0, ScriptedSink, policy, retryable, session
from tests.sink_contract_cases import make_event

MINE = "KS" + "a" * 32
THEIRS = "KS" + "b" * 32


class FencingStore(MemoryStore):
    """A memory state whose acks, retries and dead letters check the leases first.

    ``taken``: the Services another replica took over; a write naming one of them writes
    nothing at all (one transaction) and raises ``FencedError`` naming them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.taken: set[str] = set()
        self.services: dict[int, str] = {}  # delivery id -> Service, as the rows say

    def _check(self, delivery_ids: Sequence[int]) -> None:
        lost = sorted({self.services[i] for i in delivery_ids} & self.taken)
        if lost:
            raise FencedError(f"replica-a no longer holds {lost}", service_sids=tuple(lost))

    async def ack(
        self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
    ) -> None:
        self._check(delivery_ids)
        await super().ack(delivery_ids, history=history)

    async def retry_later(
        self,
        delivery_id: int,
        *,
        next_attempt_at: float,
        error: str,
        status: int | None,
        attempt: Attempt | None = None,
    ) -> None:
        self._check([delivery_id])
        await super().retry_later(
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
        self._check([delivery_id])
        await super().dead_letter(delivery_id, error=error, status=status, now=now, attempt=attempt)


def _event(service_sid: str, n: int) -> Event:
    return replace(make_event(session_sid=session(n)), service_sid=service_sid)


async def _enqueue(store: FencingStore, events: Sequence[Event], sink: str = "hook") -> None:
    for event in events:
        await store.commit_poll(
            event.service_sid, event.session_sid, fetched={}, events=[(event, [sink])], now=T0
        )
    for delivery in await store.backlog(sink, None, 1000):
        store.services[delivery.id] = delivery.event.service_sid


async def _pending(store: FencingStore, sink: str = "hook") -> list[Delivery]:
    return await store.backlog(sink, None, 1000)


def _dispatcher(
    store: FencingStore, sink: ScriptedSink, owned: set[str], **kwargs: object
) -> Dispatcher:
    clock = FakeClock(wall=T0, monotonic=T0)
    return Dispatcher(
        store,
        [sink],
        kwargs.pop("policy", POLICY),  # type: ignore[arg-type]
        clock=clock.time,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        rng=random.Random(3),
        owns=owned.__contains__,
        **kwargs,  # type: ignore[arg-type]
    )


def _fenced_deliveries(sink: str) -> float:
    sample = {"sink": sink, "outcome": "fenced"}
    return REGISTRY.get_sample_value("poller_deliveries_total", sample) or 0.0


@pytest.mark.parametrize("ignore_timers", [False, True], ids=["daemon", "once"])
async def test_a_delivery_of_a_service_not_owned_is_not_sent_and_stays_pending(
    ignore_timers: bool,
) -> None:
    store = FencingStore()
    theirs, mine = _event(THEIRS, 1), _event(MINE, 2)
    await _enqueue(store, [theirs, mine])
    sink = ScriptedSink("hook")
    result = await _dispatcher(store, sink, {MINE}).run_once(ignore_timers=ignore_timers)
    assert sink.sent == [mine.id]
    (left,) = await _pending(store)
    assert left.event.id == theirs.id and left.attempts == 0 and left.next_attempt_at == T0
    assert result.sinks["hook"].not_owned == 1 and result.sinks["hook"].delivered == 1


async def test_a_batch_full_of_another_replicas_heads_does_not_hide_ours() -> None:
    store = FencingStore()
    theirs = [_event(THEIRS, n) for n in range(5)]
    mine = _event(MINE, 9)
    await _enqueue(store, [*theirs, mine])
    sink = ScriptedSink("hook")
    result = await _dispatcher(store, sink, {MINE}, batch_size=2).run_once()
    assert sink.sent == [mine.id]
    assert [d.event.id for d in await _pending(store)] == [e.id for e in theirs]
    assert result.sinks["hook"].not_owned == 5


async def test_a_lease_lost_during_a_batch_stops_the_sends_of_that_service() -> None:
    store = FencingStore()
    first, second = _event(MINE, 1), _event(MINE, 2)
    await _enqueue(store, [first, second])
    owned = {MINE}

    async def lose_after_first(event: Event) -> None:
        owned.discard(MINE)  # the lease keeper stopped trusting the lease meanwhile

    sink = ScriptedSink("hook", before_send=lose_after_first)
    d = _dispatcher(store, sink, owned, policy=policy(concurrency=1))
    result = await d.run_once()
    assert sink.sent == [first.id]  # asked right before each send
    assert result.sinks["hook"].delivered == 1 and result.sinks["hook"].not_owned == 1
    assert [d.event.id for d in await _pending(store)] == [second.id]


async def test_a_fenced_ack_drops_the_batch_from_memory_and_loses_nothing() -> None:
    store = FencingStore()
    theirs, mine = _event(THEIRS, 1), _event(MINE, 2)
    await _enqueue(store, [theirs, mine])
    sink = ScriptedSink("hook")
    d = _dispatcher(store, sink, {MINE, THEIRS})
    store.taken = {THEIRS}  # taken over between the sends and the ack
    before = _fenced_deliveries("hook")
    with capture_logs() as logs:
        result = await d.run_once()
    assert sorted(sink.delivered) == sorted([theirs.id, mine.id])
    (left,) = await _pending(store)  # the one the new owner delivers, under the same id
    assert left.event.id == theirs.id and left.attempts == 0
    assert len(d._holds) == 0  # not held for a retry of ours
    (fenced,) = [e for e in logs if e["event"] == "delivery_fenced"]
    assert fenced["action"] == "ack" and fenced["service_sids"] == [THEIRS]
    assert fenced["deliveries"] == 1 and fenced["log_level"] == "warning"
    assert [e for e in logs if e["event"] == "delivery_loop_failed"] == []
    assert result.sinks["hook"].delivered == 1  # ours was acked on its own
    assert result.sinks["hook"].not_owned == 1
    assert _fenced_deliveries("hook") == before + 1


@pytest.mark.parametrize("permanent", [False, True], ids=["retry_later", "dead_letter"])
async def test_a_fenced_retry_or_dead_letter_leaves_the_row_as_it_was(permanent: bool) -> None:
    from poller.errors import PermanentDeliveryError

    store = FencingStore()
    event = _event(MINE, 1)
    await _enqueue(store, [event])
    failure = PermanentDeliveryError("HTTP 400", status=400) if permanent else retryable()
    sink = ScriptedSink("hook", default=failure)
    d = _dispatcher(store, sink, {MINE})
    store.taken = {MINE}
    with capture_logs() as logs:
        result = await d.run_once()
    (row,) = await _pending(store)
    assert (row.attempts, row.next_attempt_at, row.last_error) == (0, T0, None)
    assert await store.dead_letters() == []
    assert len(d._holds) == 0
    (fenced,) = [e for e in logs if e["event"] == "delivery_fenced"]
    assert fenced["action"] == ("dead_letter" if permanent else "retry_later")
    assert [e["event"] for e in logs if e["event"].startswith("delivery_")] == ["delivery_fenced"]
    assert result.sinks["hook"].failed == 0 and result.sinks["hook"].dead == 0


async def test_a_digest_leaves_out_the_queues_of_services_not_owned() -> None:
    store = FencingStore()
    theirs = [_event(THEIRS, n) for n in range(3)]
    mine = [_event(MINE, n) for n in range(10, 14)]
    await _enqueue(store, [*theirs, *mine], sink="chat")
    sink = ScriptedSink("chat", digest_threshold=3)
    await _dispatcher(store, sink, {MINE}).run_once()
    assert sink.digests == [[e.id for e in mine]]
    assert [d.event.id for d in await _pending(store, "chat")] == [e.id for e in theirs]


async def test_a_failed_digest_of_a_lost_service_is_dropped_in_one_line() -> None:
    store = FencingStore()
    events = [_event(MINE, n) for n in range(5)]
    await _enqueue(store, events, sink="chat")
    sink = ScriptedSink("chat", digest_threshold=3, default=retryable())
    d = _dispatcher(store, sink, {MINE})
    store.taken = {MINE}  # taken over while the digest was being sent
    with capture_logs() as logs:
        result = await d.run_once()
    assert sink.digests == [[e.id for e in events]]
    (fenced,) = [e for e in logs if e["event"] == "delivery_fenced"]
    assert fenced["deliveries"] == 5 and fenced["action"] == "retry_later"
    assert [(r.attempts, r.next_attempt_at) for r in await _pending(store, "chat")] == [(0, T0)] * 5
    assert len(d._holds) == 0 and result.sinks["chat"].not_owned == 5
