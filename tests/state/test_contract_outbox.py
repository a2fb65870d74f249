"""The state contract, outbox side: ordered queues, retries, dead letters, disabled sinks.

Every test runs on every backend (``conftest.BACKENDS``) through the public interface only.
"""

from __future__ import annotations

from poller.state.base import StateStore
from poller.state.models import DeadLetter, Delivery
from tests.state.cases import (
    SESSION_A,
    SESSION_B,
    SESSION_C,
    enqueue,
    events_of,
    ids_of,
    make_event,
)


async def test_delivery_carries_the_event_and_its_bookkeeping(store: StateStore) -> None:
    event = make_event(SESSION_A, 1, updated=True)
    await enqueue(store, SESSION_A, [event], ["ops"], now=7.0)
    [delivery] = await store.due("ops", 7.0, 10)
    assert delivery == Delivery(
        id=delivery.id,
        sink="ops",
        event=event,
        attempts=0,
        enqueued_at=7.0,
        next_attempt_at=7.0,
        last_error=None,
        last_status=None,
    )
    assert delivery.event.payload() == event.payload()
    assert await store.due("ops", 6.9, 10) == []
    assert await store.due("slack", None, 10) == []


async def test_due_keeps_each_session_in_order_and_never_makes_others_wait(
    store: StateStore,
) -> None:
    a1, a2, a3 = (make_event(SESSION_A, n) for n in (1, 2, 3))
    b1, b2 = (make_event(SESSION_B, n) for n in (4, 5))
    await enqueue(store, SESSION_A, [a1, a2], ["ops"], now=1.0)
    await enqueue(store, SESSION_B, [b1, b2], ["ops"], now=1.0)
    await enqueue(store, SESSION_A, [a3], ["ops"], now=1.0)

    async def due_events(now: float | None, limit: int = 10) -> list[str]:
        return events_of(await store.due("ops", now, limit))

    assert await due_events(1.0) == [a1.id, b1.id]
    assert await due_events(1.0, limit=1) == [a1.id]
    [head_a, head_b] = await store.due("ops", 1.0, 10)
    await store.retry_later(head_a.id, next_attempt_at=100.0, error="503", status=503)
    assert await due_events(50.0) == [b1.id]  # a2 waits behind the failing a1; b goes on
    assert await due_events(None) == [a1.id, b1.id]  # timers ignored, order kept
    assert await due_events(100.0) == [a1.id, b1.id]
    await store.ack([head_b.id])
    assert await due_events(50.0) == [b2.id]
    await store.dead_letter(head_a.id, error="410", status=410, now=60.0)
    assert await due_events(60.0) == [a2.id, b2.id]  # dead rows do not block
    await store.ack(ids_of(await store.due("ops", 60.0, 10)))
    assert await due_events(60.0) == [a3.id]
    assert await store.due("ops", 60.0, 0) == []
    assert await store.due("ops", 60.0, -1) == []


async def test_each_sink_has_its_own_queue(store: StateStore) -> None:
    e1, e2 = make_event(SESSION_A, 1), make_event(SESSION_A, 2)
    await enqueue(store, SESSION_A, [e1, e2], ["ops", "slack"], now=1.0)
    [ops_head] = await store.due("ops", 1.0, 10)
    await store.retry_later(ops_head.id, next_attempt_at=1e9, error="timeout", status=None)
    assert events_of(await store.due("slack", 1.0, 10)) == [e1.id]
    assert await store.due("ops", 1.0, 10) == []


async def test_backlog_gives_whole_queues_whose_head_is_due_in_enqueue_order(
    store: StateStore,
) -> None:
    a1, a2, a3 = (make_event(SESSION_A, n) for n in (1, 2, 3))
    b1, b2 = (make_event(SESSION_B, n) for n in (4, 5))
    c1 = make_event(SESSION_C, 6)
    await enqueue(store, SESSION_A, [a1, a2], ["ops"], now=1.0)
    await enqueue(store, SESSION_B, [b1], ["ops"], now=1.0)
    await enqueue(store, SESSION_C, [c1], ["ops", "slack"], now=1.0)
    await enqueue(store, SESSION_A, [a3], ["ops"], now=1.0)
    await enqueue(store, SESSION_B, [b2], ["ops"], now=1.0)
    assert events_of(await store.backlog("ops", 1.0, 100)) == [
        e.id for e in (a1, a2, b1, c1, a3, b2)
    ]
    assert events_of(await store.backlog("ops", 1.0, 3)) == [a1.id, a2.id, b1.id]
    [head_a, head_b, _] = await store.due("ops", 1.0, 10)
    await store.retry_later(head_b.id, next_attempt_at=50.0, error="503", status=503)
    assert events_of(await store.backlog("ops", 1.0, 100)) == [e.id for e in (a1, a2, c1, a3)]
    assert len(await store.backlog("ops", None, 100)) == 6  # timers ignored
    await store.dead_letter(head_a.id, error="400", status=400, now=2.0)
    assert events_of(await store.backlog("ops", 1.0, 100)) == [a2.id, c1.id, a3.id]
    assert events_of(await store.backlog("slack", None, 100)) == [c1.id]
    assert await store.backlog("ops", 1.0, 0) == []


async def test_ack_removes_the_event_when_the_last_sink_acks(store: StateStore) -> None:
    event = make_event(SESSION_A, 1)
    await enqueue(store, SESSION_A, [event], ["ops", "slack"], now=1.0)
    [ops] = await store.due("ops", None, 10)
    await store.ack([ops.id])
    assert await store.due("ops", None, 10) == []
    [slack] = await store.due("slack", None, 10)
    assert slack.event == event  # the event stays while a sink still needs it
    await store.ack([slack.id])
    await store.ack([])
    assert await store.pending_count() == 0
    assert await store.oldest_pending_enqueued_at() is None


async def test_ack_handles_more_ids_than_one_statement_binds(store: StateStore) -> None:
    events = [make_event(SESSION_A, n) for n in range(1200)]
    await enqueue(store, SESSION_A, events, ["ops"], now=1.0)
    rows = await store.backlog("ops", None, 2000)
    assert len(rows) == 1200
    await store.ack(ids_of(rows))
    assert await store.pending_count() == 0


async def test_delivery_ids_are_never_reused(store: StateStore) -> None:
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops"], now=1.0)
    [first] = await store.due("ops", None, 1)
    await store.ack([first.id])
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 2)], ["ops"], now=2.0)
    [second] = await store.due("ops", None, 1)
    assert second.id > first.id


async def test_retry_later_counts_attempts_and_keeps_a_short_error(store: StateStore) -> None:
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops"], now=1.0)
    [first] = await store.due("ops", 1.0, 1)
    await store.retry_later(first.id, next_attempt_at=5.0, error="boom\n" * 400, status=502)
    [failed] = await store.due("ops", 5.0, 1)
    assert failed.last_error is not None and len(failed.last_error) <= 300
    assert "\n" not in failed.last_error
    await store.retry_later(first.id, next_attempt_at=9.0, error="HTTP 503", status=503)
    [again] = await store.due("ops", 9.0, 1)
    assert (again.attempts, again.next_attempt_at) == (2, 9.0)
    assert (again.last_error, again.last_status) == ("HTTP 503", 503)
    assert await store.pending_count("ops") == 1


async def test_dead_letter_keeps_the_row_out_of_due_until_requeued(store: StateStore) -> None:
    e1, e2 = make_event(SESSION_A, 1), make_event(SESSION_A, 2)
    await enqueue(store, SESSION_A, [e1, e2], ["ops"], now=1.0)
    [head] = await store.due("ops", 1.0, 10)
    await store.retry_later(head.id, next_attempt_at=2.0, error="500", status=500)
    await store.dead_letter(head.id, error="HTTP 400 " + "y" * 1000, status=400, now=3.0)
    [dead] = await store.dead_letters()
    assert isinstance(dead, DeadLetter)
    assert (dead.id, dead.event, dead.attempts, dead.dead_at) == (head.id, e1, 2, 3.0)
    assert dead.last_status == 400
    assert dead.last_error is not None
    assert len(dead.last_error) <= 300
    assert await store.dead_letters("slack") == []
    assert await store.pending_count() == 1
    assert [d.event for d in await store.due("ops", None, 10)] == [e2]

    assert await store.requeue(now=10.0) == 1
    assert await store.dead_letters() == []
    [requeued] = await store.due("ops", 10.0, 10)  # back at the head of its session's queue
    assert (requeued.id, requeued.attempts, requeued.next_attempt_at) == (head.id, 0, 10.0)
    assert await store.due("ops", 9.0, 10) == []  # and it blocks e2 again until due


async def test_a_dead_row_takes_no_more_retries_or_dead_letters(store: StateStore) -> None:
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops"], now=1.0)
    [head] = await store.due("ops", None, 1)
    await store.dead_letter(head.id, error="400", status=400, now=2.0)
    await store.retry_later(head.id, next_attempt_at=9.0, error="503", status=503)
    await store.dead_letter(head.id, error="410", status=410, now=5.0)
    [dead] = await store.dead_letters()
    assert (dead.attempts, dead.dead_at, dead.last_status, dead.next_attempt_at) == (
        1,
        2.0,
        400,
        1.0,
    )
    assert await store.pending_count() == 0


async def test_requeue_and_purge_select_by_ids_and_sink(store: StateStore) -> None:
    events = [make_event(SESSION_A, n) for n in range(3)]
    await enqueue(store, SESSION_A, events, ["ops", "slack"], now=1.0)
    for sink in ("ops", "slack"):
        for _ in events:
            [head] = await store.due(sink, None, 1)
            await store.dead_letter(head.id, error="400", status=400, now=2.0)
    ops_dead = ids_of(await store.dead_letters("ops"))
    assert len(ops_dead) == 3
    assert len(await store.dead_letters()) == 6
    assert await store.requeue([ops_dead[0]], sink="slack", now=3.0) == 0
    assert await store.requeue([ops_dead[0]], now=3.0) == 1
    assert await store.requeue([], now=3.0) == 0
    assert await store.purge([ops_dead[1]]) == 1
    assert await store.purge(sink="slack") == 3
    assert await store.purge([ops_dead[0]]) == 0  # pending rows are never purged
    assert ids_of(await store.dead_letters()) == [ops_dead[2]]
    assert await store.purge() == 1
    assert await store.purge() == 0
    assert [d.event for d in await store.due("ops", None, 10)] == [events[0]]


async def test_requeue_keeps_the_last_error_and_the_enqueue_time(store: StateStore) -> None:
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops"], now=1.0)
    [head] = await store.due("ops", None, 1)
    await store.dead_letter(head.id, error="HTTP 400", status=400, now=2.0)
    assert await store.requeue(sink="ops", now=7.0) == 1
    [back] = await store.due("ops", 7.0, 1)
    assert (back.enqueued_at, back.attempts, back.last_error, back.last_status) == (
        1.0,
        0,
        "HTTP 400",
        400,
    )


async def test_pending_counts_and_oldest_enqueued(store: StateStore) -> None:
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops", "slack"], now=5.0)
    await enqueue(store, SESSION_B, [make_event(SESSION_B, 2)], ["ops"], now=8.0)
    counts = (
        await store.pending_count(),
        await store.pending_count("ops"),
        await store.pending_count("x"),
    )
    assert counts == (3, 2, 0)
    assert await store.oldest_pending_enqueued_at() == 5.0
    assert await store.counts_by_sink("pending") == {"ops": 2, "slack": 1}
    [head] = await store.due("slack", None, 1)
    await store.dead_letter(head.id, error="400", status=400, now=9.0)
    assert await store.counts_by_sink("pending") == {"ops": 2}
    assert await store.counts_by_sink("dead") == {"slack": 1}
    assert await store.pending_count() == 2


async def test_failing_sinks_count_retried_rows_and_give_the_error_of_the_most_tried(
    store: StateStore,
) -> None:
    await enqueue(
        store, SESSION_A, [make_event(SESSION_A, n) for n in (1, 2)], ["ops", "fine"], 1.0
    )
    await enqueue(store, SESSION_B, [make_event(SESSION_B, 3)], ["ops"], now=1.0)
    a_head, b_head = await store.due("ops", None, 10)
    await store.retry_later(a_head.id, next_attempt_at=50.0, error="HTTP 503", status=503)
    await store.retry_later(b_head.id, next_attempt_at=40.0, error="HTTP 502", status=502)
    await store.retry_later(b_head.id, next_attempt_at=90.0, error="HTTP 504", status=504)

    (ops,) = await store.failing_sinks()
    assert (ops.sink, ops.deliveries, ops.attempts, ops.next_attempt_at) == ("ops", 2, 2, 50.0)
    assert (ops.last_status, ops.last_error) == (504, "HTTP 504")
    assert await store.failing_sinks("fine") == []
    assert [f.sink for f in await store.failing_sinks("ops")] == ["ops"]
    await store.ack([a_head.id, b_head.id])
    assert await store.failing_sinks() == []


async def test_a_clock_step_moves_due_and_enqueue_times_of_pending_rows_only(
    store: StateStore,
) -> None:
    t0 = 1_800_000_000.0
    kept, dead = make_event(SESSION_A, 1), make_event(SESSION_B, 2)
    await enqueue(store, SESSION_A, [kept], ["hook"], t0)
    await enqueue(store, SESSION_B, [dead], ["hook"], t0)
    rows = {d.event.id: d for d in await store.due("hook", None, 10)}
    await store.retry_later(rows[kept.id].id, next_attempt_at=t0 + 60, error="503", status=503)
    await store.dead_letter(rows[dead.id].id, error="410", status=410, now=t0)

    assert await store.shift_due_times(-3600.0) == 1
    assert await store.due("hook", t0 - 3600 + 59.9, 10) == []  # the queue head moved too
    (row,) = await store.due("hook", t0 - 3600 + 60, 10)
    assert (row.enqueued_at, row.next_attempt_at) == (t0 - 3600, t0 - 3600 + 60)
    assert await store.oldest_pending_enqueued_at() == t0 - 3600
    (letter,) = await store.dead_letters("hook")
    assert letter.enqueued_at == t0


# ---- sinks that left the config, sinks disabled by their answers ---------------------------


async def test_dead_letter_other_sinks_gives_up_on_sinks_no_longer_configured(
    store: StateStore,
) -> None:
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops", "old", "gone"], 1.0)
    await enqueue(store, SESSION_B, [make_event(SESSION_B, 2)], ["old"], 1.0)
    assert await store.dead_letter_other_sinks(["ops"], now=5.0) == 3
    assert await store.dead_letter_other_sinks(["ops"], now=6.0) == 0
    letters = await store.dead_letters()
    assert sorted(d.sink for d in letters) == ["gone", "old", "old"]
    assert {(d.dead_at, d.attempts, d.last_error) for d in letters} == {
        (5.0, 0, "the sink is no longer configured")
    }
    assert await store.pending_count() == 1
    assert await store.requeue(sink="old", now=7.0) == 2  # the sink came back
    assert await store.pending_count("old") == 2
    assert await store.dead_letter_other_sinks([], now=8.0) == 3  # none configured: all


async def test_a_disabled_sink_keeps_its_since_and_takes_the_latest_answer(
    store: StateStore,
) -> None:
    assert await store.disabled_sinks() == []
    await store.record_sink_disabled("ops", status=404, reason="webhook\ndeleted", now=1.0)
    await store.record_sink_disabled("mail", status=None, reason="x" * 1000, now=2.0)
    await store.record_sink_disabled("ops", status=410, reason="gone", now=3.0)
    mail, ops = await store.disabled_sinks()
    assert (ops.sink, ops.since, ops.last_at, ops.status, ops.reason) == (
        "ops",
        1.0,
        3.0,
        410,
        "gone",
    )
    assert (mail.sink, mail.status, len(mail.reason) <= 300) == ("mail", None, True)
    assert await store.disabled_sinks("ops") == [ops]
    assert await store.disabled_sinks("other") == []


async def test_disabled_note_is_cleared_by_sink_or_all_and_with_a_removed_sink(
    store: StateStore,
) -> None:
    for sink in ("a", "b", "c"):
        await store.record_sink_disabled(sink, status=None, reason=f"{sink} gone", now=1.0)

    assert [d.sink for d in await store.clear_sink_disabled("a")] == ["a"]
    assert await store.clear_sink_disabled("a") == []
    await store.dead_letter_other_sinks(["c"], now=2.0)  # "b" left the config
    assert [d.sink for d in await store.disabled_sinks()] == ["c"]
    assert [d.reason for d in await store.clear_sink_disabled()] == ["c gone"]
    assert await store.disabled_sinks() == []
    await store.record_sink_disabled("c", status=None, reason="again", now=9.0)
    assert [d.since for d in await store.disabled_sinks()] == [9.0]  # a new note, a new since


async def test_an_event_queued_again_uses_up_an_id_as_on_every_backend(store: StateStore) -> None:
    """Ids are the same on every backend: a pair already queued still takes its number."""
    e1, e2 = make_event(SESSION_A, 1), make_event(SESSION_A, 2)
    await enqueue(store, SESSION_A, [e1], ["ops"], now=1.0)
    await enqueue(store, SESSION_A, [e1, e2], ["ops"], now=2.0)
    [first] = await store.due("ops", 2.0, 10)
    await store.ack([first.id])
    [second] = await store.due("ops", 2.0, 10)
    assert (first.event.id, second.event.id, second.id - first.id) == (e1.id, e2.id, 2)
