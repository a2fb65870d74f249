"""The state contract, history side: kept events and attempts, filters, replay, pruning.

Every test runs on every backend (``conftest.BACKENDS``) through the public interface only.
"""

from __future__ import annotations

import time

from poller.events import Event
from poller.state.base import StateStore
from poller.state.history import Attempt, AttemptOutcome
from poller.state.models import Delivery
from poller.state.views import AttemptRecord, HistoryQuery, KeptEvent, SinkOutcome
from tests.state.cases import SESSION_A, SESSION_B, enqueue, events_of, ids_of, make_event


def attempt(
    delivery: Delivery,
    at: float,
    outcome: AttemptOutcome = "delivered",
    status: int | None = 200,
    error: str | None = None,
    latency: float = 0.25,
) -> Attempt:
    return Attempt(delivery.id, at, latency, outcome, status, error)


async def head(store: StateStore, sink: str, event: Event) -> Delivery:
    """The due row of ``event`` for ``sink`` (timers ignored)."""
    [found] = [d for d in await store.backlog(sink, None, 1000) if d.event.id == event.id]
    return found


async def deliver(store: StateStore, sink: str, events: list[Event], at: float) -> None:
    """Ack each event's row for ``sink`` with one successful attempt at ``at``."""
    rows = [await head(store, sink, e) for e in events]
    await store.ack(ids_of(rows), history=[attempt(d, at) for d in rows])


async def kept(store: StateStore, event: Event) -> KeptEvent:
    [found] = await store.history(HistoryQuery(event_ids=(event.id,)))
    return found


def ids(kept_events: list[KeptEvent]) -> list[str]:
    return [k.event.id for k in kept_events]


async def test_ack_without_history_forgets_the_event_and_its_attempts(store: StateStore) -> None:
    event = make_event(SESSION_A, 1)
    await enqueue(store, SESSION_A, [event], ["ops"], now=1.0)
    row = await head(store, "ops", event)
    failed = attempt(row, 2.0, "retry", 503, "HTTP 503")
    await store.retry_later(row.id, next_attempt_at=3.0, error="503", status=503, attempt=failed)
    assert await store.kept_events() == 1
    await store.ack([row.id])
    assert await store.kept_events() == 0
    assert await store.history(HistoryQuery()) == []
    assert await store.recent_attempts("ops", 10) == []


async def test_ack_with_history_keeps_the_event_done_when_its_last_row_goes(
    store: StateStore,
) -> None:
    event = make_event(SESSION_A, 1)
    await enqueue(store, SESSION_A, [event], ["ops", "slack"], now=5.0)
    await deliver(store, "ops", [event], at=10.0)
    first = await kept(store, event)
    assert (first.event, first.detected_at, first.done_at) == (event, 5.0, None)
    assert [(s.sink, s.state, s.attempts) for s in first.sinks] == [
        ("ops", "delivered", 1),
        ("slack", "pending", 0),
    ]
    assert await store.due("ops", None, 10) == []
    await deliver(store, "slack", [event], at=12.5)
    done = await kept(store, event)
    assert done.done_at == 12.5
    assert done.sinks == (
        SinkOutcome("ops", "delivered", 1, 10.0, 200, None),
        SinkOutcome("slack", "delivered", 1, 12.5, 200, None),
    )
    assert await store.kept_events() == 1
    assert await store.pending_count() == 0


async def test_done_at_is_the_latest_attempt_of_the_ack(store: StateStore) -> None:
    e1, e2 = make_event(SESSION_A, 1), make_event(SESSION_B, 2)
    await enqueue(store, SESSION_A, [e1], ["ops"], now=1.0)
    await enqueue(store, SESSION_B, [e2], ["ops"], now=1.0)
    r1, r2 = await head(store, "ops", e1), await head(store, "ops", e2)
    await store.ack([r1.id, r2.id], history=[attempt(r1, 4.0), attempt(r2, 3.0)])
    assert [(await kept(store, e)).done_at for e in (e1, e2)] == [4.0, 4.0]


async def test_retry_dead_and_disabled_attempts_are_kept_with_their_answer(
    store: StateStore,
) -> None:
    e1, e2 = make_event(SESSION_A, 1), make_event(SESSION_B, 2)
    await enqueue(store, SESSION_A, [e1], ["ops"], now=1.0)
    await enqueue(store, SESSION_B, [e2], ["ops"], now=1.0)
    r1, r2 = await head(store, "ops", e1), await head(store, "ops", e2)
    retry = attempt(r1, 2.0, "retry", 503, "HTTP 503", latency=1.5)
    await store.retry_later(r1.id, next_attempt_at=9.0, error="HTTP 503", status=503, attempt=retry)
    dead = attempt(r1, 9.0, "dead", None, "ReadTimeout", latency=20.0)
    await store.dead_letter(r1.id, error="timeout", status=None, now=9.5, attempt=dead)
    gone = attempt(r2, 10.0, "disabled", 410, "HTTP 410", latency=0.1)
    await store.record_attempts([gone, Attempt(99_999, 10.0, 0.1, "disabled", 410, "HTTP 410")])

    assert await store.recent_attempts("ops", 10) == [
        AttemptRecord(e2.id, "ops", SESSION_B, 10.0, 0.1, "disabled", 410, "HTTP 410"),
        AttemptRecord(e1.id, "ops", SESSION_A, 9.0, 20.0, "dead", None, "ReadTimeout"),
        AttemptRecord(e1.id, "ops", SESSION_A, 2.0, 1.5, "retry", 503, "HTTP 503"),
    ]
    assert (await kept(store, e1)).sinks == (
        SinkOutcome("ops", "dead", 2, 9.0, None, "ReadTimeout"),
    )
    assert (await kept(store, e2)).sinks == (
        SinkOutcome("ops", "pending", 1, 10.0, 410, "HTTP 410"),
    )
    assert (await kept(store, e1)).done_at is None


async def test_recent_attempts_are_the_newest_first_of_one_sink_up_to_the_limit(
    store: StateStore,
) -> None:
    events = [make_event(SESSION_A, n) for n in range(1, 5)]
    await enqueue(store, SESSION_A, events, ["ops", "slack"], now=1.0)
    for n, event in enumerate(events):
        await deliver(store, "ops", [event], at=10.0 + n)
    await deliver(store, "slack", events[:1], at=50.0)
    recent = await store.recent_attempts("ops", 3)
    assert [(a.event_id, a.at) for a in recent] == [
        (events[3].id, 13.0),
        (events[2].id, 12.0),
        (events[1].id, 11.0),
    ]
    assert [a.sink for a in await store.recent_attempts("slack", 10)] == ["slack"]
    assert await store.recent_attempts("ops", 0) == []
    assert await store.recent_attempts("nowhere", 10) == []


async def test_history_filters_by_session_sink_type_since_and_ids(store: StateStore) -> None:
    a1, a2 = make_event(SESSION_A, 1), make_event(SESSION_A, 2, updated=True)
    b3 = make_event(SESSION_B, 3)
    await enqueue(store, SESSION_A, [a1], ["ops", "slack"], now=10.0)
    await enqueue(store, SESSION_B, [b3], ["slack"], now=20.0)
    await enqueue(store, SESSION_A, [a2], ["ops"], now=30.0)
    await deliver(store, "ops", [a1], at=40.0)  # a1 for ops: attempted and done, no row left

    async def select(**fields: object) -> list[str]:
        return ids(await store.history(HistoryQuery(**fields)))  # type: ignore[arg-type]

    assert await select() == [a1.id, b3.id, a2.id]
    assert await select(session_sid=SESSION_A) == [a1.id, a2.id]
    assert await select(sink="ops") == [a1.id, a2.id]
    assert await select(sink="slack") == [a1.id, b3.id]
    assert await select(sink="email") == []
    assert await select(type="interaction.updated") == [a2.id]
    assert await select(type="interaction.created", session_sid=SESSION_A) == [a1.id]
    assert await select(since=20.0) == [b3.id, a2.id]
    assert await select(since=20.0, sink="slack") == [b3.id]
    assert await select(event_ids=(a2.id, a1.id, "evt_unknown")) == [a1.id, a2.id]
    assert await select(session_sid=SESSION_B, sink="ops") == []


async def test_history_limit_keeps_the_latest_in_their_original_order(store: StateStore) -> None:
    events = [make_event(SESSION_A if n % 2 else SESSION_B, n) for n in range(1, 7)]
    for n, event in enumerate(events):
        await enqueue(store, event.session_sid, [event], ["ops"], now=float(n))
    latest = await store.history(HistoryQuery(limit=3))
    assert ids(latest) == [e.id for e in events[3:]]
    assert [k.seq for k in latest] == sorted(k.seq for k in latest)
    assert ids(await store.history(HistoryQuery(session_sid=SESSION_A, limit=2))) == [
        events[2].id,
        events[4].id,
    ]
    assert ids(await store.history(HistoryQuery(limit=100))) == [e.id for e in events]
    assert await store.history(HistoryQuery(limit=0)) == []


async def test_sink_outcome_is_pending_dead_or_delivered_per_sink(store: StateStore) -> None:
    event = make_event(SESSION_A, 1)
    await enqueue(store, SESSION_A, [event], ["ops", "slack", "email"], now=1.0)
    await deliver(store, "ops", [event], at=2.0)
    slack = await head(store, "slack", event)
    await store.dead_letter(
        slack.id, error="HTTP 404", status=404, now=3.0, attempt=attempt(slack, 3.0, "dead", 404)
    )
    assert [(s.sink, s.state) for s in (await kept(store, event)).sinks] == [
        ("email", "pending"),
        ("ops", "delivered"),
        ("slack", "dead"),
    ]
    assert (await kept(store, event)).sinks[0] == SinkOutcome(
        "email", "pending", 0, None, None, None
    )


async def test_replay_queues_kept_events_in_original_order_under_their_ids(
    store: StateStore,
) -> None:
    a1, a2, a3 = (make_event(SESSION_A, n) for n in (1, 2, 3))
    b4 = make_event(SESSION_B, 4)
    await enqueue(store, SESSION_A, [a1, a2], ["ops"], now=1.0)
    await enqueue(store, SESSION_B, [b4], ["ops"], now=2.0)
    await enqueue(store, SESSION_A, [a3], ["ops"], now=3.0)
    await deliver(store, "ops", [a1, a2, b4, a3], at=5.0)
    assert await store.pending_count() == 0

    queued = await store.replay("ops", [a3.id, b4.id, a1.id, "evt_unknown", a2.id], now=100.0)
    assert queued == [a1.id, a2.id, b4.id, a3.id]
    assert [(await kept(store, e)).done_at for e in (a1, a2, a3, b4)] == [None] * 4
    [replayed] = [d for d in await store.due("ops", 100.0, 10) if d.event.id == a1.id]
    assert (replayed.event, replayed.attempts, replayed.enqueued_at) == (a1, 0, 100.0)
    assert replayed.next_attempt_at == 100.0
    assert await store.due("ops", 99.0, 10) == []

    order: list[str] = []
    while due := await store.due("ops", 100.0, 10):
        order += events_of(due)
        await store.ack(ids_of(due), history=[attempt(d, 200.0) for d in due])
    assert order == [a1.id, b4.id, a2.id, a3.id]  # each session's queue in its original order
    assert (await kept(store, a1)).sinks == (SinkOutcome("ops", "delivered", 2, 200.0, 200, None),)
    assert (await kept(store, a1)).done_at == 200.0


async def test_replay_skips_what_the_outbox_holds_for_the_sink(store: StateStore) -> None:
    e1, e2, e3 = (make_event(SESSION_A, n) for n in (1, 2, 3))
    await enqueue(store, SESSION_A, [e1, e2, e3], ["ops"], now=1.0)
    await deliver(store, "ops", [e1], at=2.0)
    r2 = await head(store, "ops", e2)
    await store.dead_letter(r2.id, error="HTTP 400", status=400, now=3.0)
    assert await store.replay("ops", [e1.id, e2.id, e3.id], now=4.0) == [e1.id]
    assert await store.replay("ops", [e1.id], now=5.0) == []  # pending again already
    assert await store.pending_count("ops") == 2
    assert await store.replay("slack", [e3.id], now=6.0) == [e3.id]  # a sink it never went to
    assert [(s.sink, s.state) for s in (await kept(store, e3)).sinks] == [
        ("ops", "pending"),
        ("slack", "pending"),
    ]
    assert await store.replay("ops", [], now=7.0) == []


async def test_replayed_rows_wait_behind_what_the_queue_already_holds(store: StateStore) -> None:
    e1, e2, e3 = (make_event(SESSION_A, n) for n in (1, 2, 3))
    await enqueue(store, SESSION_A, [e1, e2], ["ops"], now=1.0)
    await deliver(store, "ops", [e1, e2], at=2.0)
    await enqueue(store, SESSION_A, [e3], ["ops"], now=3.0)
    assert await store.replay("ops", [e2.id, e1.id], now=4.0) == [e1.id, e2.id]
    order: list[str] = []
    while due := await store.due("ops", 4.0, 10):
        order += events_of(due)
        await store.ack(ids_of(due), history=[attempt(d, 5.0) for d in due])
    assert order == [e3.id, e1.id, e2.id]


async def test_prune_history_forgets_events_done_longer_ago_than_kept(store: StateStore) -> None:
    old, recent, waiting, dead = (make_event(SESSION_A, n) for n in (1, 2, 3, 4))
    await enqueue(store, SESSION_A, [old, recent, waiting, dead], ["ops"], now=1.0)
    await deliver(store, "ops", [old], at=10.0)
    await deliver(store, "ops", [recent], at=100.0)
    row = await head(store, "ops", waiting)
    await store.retry_later(
        row.id,
        next_attempt_at=1e9,
        error="HTTP 503",
        status=503,
        attempt=attempt(row, 5.0, "retry"),
    )
    dead_row = await head(store, "ops", dead)
    await store.dead_letter(
        dead_row.id, error="HTTP 400", status=400, now=6.0, attempt=attempt(dead_row, 6.0, "dead")
    )

    assert await store.prune_history(now=200.0, keep_seconds=150.0) == 1
    assert ids(await store.history(HistoryQuery())) == [recent.id, waiting.id, dead.id]
    assert old.id not in {a.event_id for a in await store.recent_attempts("ops", 10)}
    assert await store.replay("ops", [old.id], now=201.0) == []  # not kept any more
    assert await store.prune_history(now=200.0, keep_seconds=150.0) == 0
    assert await store.prune_history(now=1e6, keep_seconds=0.0) == 1  # recent; never the others
    assert ids(await store.history(HistoryQuery())) == [waiting.id, dead.id]
    assert await store.kept_events() == 2
    assert len(await store.recent_attempts("ops", 10)) == 2


async def test_a_replayed_event_is_not_pruned_until_delivered_again(store: StateStore) -> None:
    event = make_event(SESSION_A, 1)
    await enqueue(store, SESSION_A, [event], ["ops"], now=1.0)
    await deliver(store, "ops", [event], at=2.0)
    await store.replay("ops", [event.id], now=3.0)
    assert await store.prune_history(now=1e6, keep_seconds=1.0) == 0
    await deliver(store, "ops", [event], at=4.0)
    assert await store.prune_history(now=1e6, keep_seconds=1.0) == 1
    assert await store.kept_events() == 0


async def test_purge_keeps_an_attempted_event_done_now_and_drops_one_never_tried(
    store: StateStore,
) -> None:
    tried, untried = make_event(SESSION_A, 1), make_event(SESSION_B, 2)
    await enqueue(store, SESSION_A, [tried], ["ops"], now=1.0)
    await enqueue(store, SESSION_B, [untried], ["ops"], now=1.0)
    r1, r2 = await head(store, "ops", tried), await head(store, "ops", untried)
    await store.dead_letter(
        r1.id, error="HTTP 400", status=400, now=2.0, attempt=attempt(r1, 2.0, "dead", 400)
    )
    await store.dead_letter(r2.id, error="the sink is no longer configured", status=None, now=2.0)
    before = time.time()
    assert await store.purge() == 2
    after = time.time()
    [left] = await store.history(HistoryQuery())
    assert left.event == tried
    assert left.done_at is not None and before - 1.0 <= left.done_at <= after + 1.0
    assert left.sinks == (SinkOutcome("ops", "delivered", 1, 2.0, 400, None),)
    assert await store.kept_events() == 1
    assert await store.dead_letters() == []


async def test_oldest_pending_by_sink_and_kept_events_count(store: StateStore) -> None:
    e1, e2, e3 = (make_event(SESSION_A, n) for n in (1, 2, 3))
    assert await store.oldest_pending_by_sink() == {}
    assert await store.kept_events() == 0
    await enqueue(store, SESSION_A, [e1], ["ops", "slack"], now=10.0)
    await enqueue(store, SESSION_A, [e2], ["ops", "email"], now=20.0)
    await enqueue(store, SESSION_A, [e3], ["ops"], now=30.0)
    await deliver(store, "slack", [e1], at=31.0)
    await deliver(store, "ops", [e1], at=32.0)
    email = await head(store, "email", e2)
    await store.dead_letter(email.id, error="HTTP 400", status=400, now=33.0)
    assert await store.oldest_pending_by_sink() == {"ops": 20.0}
    assert await store.kept_events() == 3  # done, pending and dead alike


async def test_a_done_event_detected_again_is_queued_again_and_not_done(store: StateStore) -> None:
    event = make_event(SESSION_A, 1)
    await enqueue(store, SESSION_A, [event], ["ops"], now=1.0)
    await deliver(store, "ops", [event], at=2.0)
    await enqueue(store, SESSION_A, [event], ["ops"], now=3.0)  # its session was pruned, say
    again = await kept(store, event)
    assert (again.detected_at, again.done_at) == (1.0, None)
    assert events_of(await store.due("ops", 3.0, 10)) == [event.id]
    assert await store.kept_events() == 1


async def test_ack_with_an_empty_history_still_keeps_the_event_done(store: StateStore) -> None:
    event = make_event(SESSION_A, 1)
    await enqueue(store, SESSION_A, [event], ["ops"], now=1.0)
    row = await head(store, "ops", event)
    before = time.time()
    await store.ack([row.id], history=[])
    done = await kept(store, event)
    assert done.sinks == () and await store.pending_count() == 0
    assert done.done_at is not None and before - 1.0 <= done.done_at <= time.time() + 1.0
