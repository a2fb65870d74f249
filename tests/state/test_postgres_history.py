"""PostgreSQL only, the history: schema V2 over a V1 database, the fence on every write that
keeps attempts, an operator's replay beside a daemon's ack, and the owners' counts.

Lease rows are written with SQL as the lease keeper would (``test_postgres_outbox.lease``);
rows are enqueued with the poll's own ``enqueue``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from poller.errors import FencedError
from poller.state.history import Attempt, AttemptOutcome
from poller.state.postgres import history, outbox, schema
from poller.state.postgres.db import Settings, connect
from poller.state.postgres.store import PostgresStore
from poller.state.views import HistoryQuery
from tests.state.cases import SESSION_A, SESSION_B, make_event
from tests.state.test_postgres_outbox import (
    EPOCH,
    MINE,
    THEIRS,
    event_of,
    lease,
    operator,
    put,
    replica,
    wait_until_blocked,
)

__all__ = ["operator", "replica"]  # the fixtures, shared with the outbox's PostgreSQL tests


def delivered(row_id: int, at: float = 5.0) -> Attempt:
    return Attempt(row_id, at, 0.25, "delivered", 200)


def failed(row_id: int, outcome: AttemptOutcome = "retry", at: float = 5.0) -> Attempt:
    return Attempt(row_id, at, 0.5, outcome, 503, "HTTP 503")


def attempts_kept(url: str) -> list[tuple[str, str, str]]:
    """Every kept attempt's (event, sink, Service), read with plain SQL."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT event_id, sink, service_sid FROM attempts ORDER BY id")
        return [(str(e), str(s), str(k)) for e, s, k in rows.fetchall()]


async def test_a_v1_database_gets_its_events_in_the_order_of_their_first_delivery(
    pg_url: str,
) -> None:
    conn = await connect(Settings(pg_url))
    try:
        assert await schema.migrate(conn, schema.MIGRATIONS[:1]) == 1
    finally:
        await conn.close()
    first, second, bare = (make_event(SESSION_A, n) for n in (1, 2, 3))
    with psycopg.connect(pg_url, autocommit=True) as sync:
        for event in (second, first, bare):  # stored in another order than delivered
            sync.execute(
                "INSERT INTO events (id, service_sid, session_sid, body) VALUES (%s, %s, %s, %s)",
                (event.id, event.service_sid, event.session_sid, event.to_json()),
            )
        for event, sink, enqueued_at in ((first, "hook", 7.0), (second, "hook", 8.0)):
            sync.execute(
                "INSERT INTO deliveries (event_id, sink, service_sid, session_sid, "
                "enqueued_at, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (event.id, sink, event.service_sid, event.session_sid, enqueued_at, enqueued_at),
            )
    store = await PostgresStore.open(Settings(pg_url))  # applies V2
    try:
        later = make_event(SESSION_A, 4)
        await put(store, later, now=9.0)
        kept = await store.history(HistoryQuery())
        assert [(k.event.id, k.detected_at, k.done_at) for k in kept] == [
            (first.id, 7.0, None),
            (second.id, 8.0, None),
            (later.id, 9.0, None),  # numbered after the old ones
        ]  # and the event V1 left without a delivery is gone
        created = await store.history(HistoryQuery(type="interaction.created"))
        assert [k.event.id for k in created] == [first.id, second.id, later.id]  # type filled
        assert (await store.summary()).schema_version == schema.latest_version()
    finally:
        await store.close()


KeepingWrite = Callable[[PostgresStore, int], Awaitable[object]]
KEEPING_WRITES: dict[str, KeepingWrite] = {
    "ack": lambda store, rid: store.ack([rid], history=[delivered(rid)]),
    "retry": lambda store, rid: store.retry_later(
        rid, next_attempt_at=9.0, error="HTTP 503", status=503, attempt=failed(rid)
    ),
    "dead": lambda store, rid: store.dead_letter(
        rid, error="HTTP 503", status=503, now=9.0, attempt=failed(rid, "dead")
    ),
    "record": lambda store, rid: store.record_attempts([failed(rid, "disabled")]),
}


@pytest.mark.parametrize("write", sorted(KEEPING_WRITES))
async def test_a_write_for_a_service_not_held_keeps_no_attempt(
    pg_url: str, operator: PostgresStore, replica: PostgresStore, write: str
) -> None:
    await put(operator, event_of(MINE, SESSION_A, 1))
    before = await operator.backlog("hook", None, 10)
    lease(pg_url, MINE, "b", EPOCH + 1, 60)  # taken over
    with pytest.raises(FencedError):
        await KEEPING_WRITES[write](replica, before[0].id)
    assert await operator.backlog("hook", None, 10) == before
    assert attempts_kept(pg_url) == []
    assert [k.done_at for k in await operator.history(HistoryQuery())] == [None]


@pytest.mark.parametrize("write", sorted(KEEPING_WRITES))
async def test_the_owner_keeps_attempts_under_the_rows_service(
    pg_url: str, operator: PostgresStore, replica: PostgresStore, write: str
) -> None:
    event = event_of(MINE, SESSION_A, 1)
    await put(operator, event)
    [row] = await replica.due("hook", None, 10)
    await KEEPING_WRITES[write](replica, row.id)
    assert attempts_kept(pg_url) == [(event.id, "hook", MINE)]


async def test_a_replicas_replay_is_fenced_and_an_operators_is_not(
    pg_url: str, operator: PostgresStore, replica: PostgresStore
) -> None:
    theirs = event_of(THEIRS, SESSION_B, 1)
    await put(operator, theirs)
    [row] = await operator.due("hook", None, 10)
    await operator.ack([row.id], history=[delivered(row.id)])
    with pytest.raises(FencedError):
        await replica.replay("ops", [theirs.id], now=6.0)
    assert await operator.pending_count() == 0
    assert await operator.replay("ops", [theirs.id], now=6.0) == [theirs.id]
    assert [d.event.id for d in await operator.due("ops", None, 10)] == [theirs.id]


async def test_the_oldest_pending_rows_are_the_owned_services_with_a_fence(
    operator: PostgresStore, replica: PostgresStore
) -> None:
    await put(operator, event_of(THEIRS, SESSION_B, 1), sinks=("hook", "ops"), now=1.0)
    await put(operator, event_of(MINE, SESSION_A, 2), sinks=("hook",), now=5.0)
    assert await replica.oldest_pending_by_sink() == {"hook": 5.0}
    assert await operator.oldest_pending_by_sink() == {"hook": 1.0, "ops": 1.0}


async def test_an_ack_that_waits_for_a_replay_leaves_the_event_pending(
    pg_url: str, operator: PostgresStore, replica: PostgresStore
) -> None:
    """The replay locks the event first, as the ack does: the ack waits, then sees the new row.

    Without that lock the ack would wait only at its update of the event, re-checked against
    a snapshot from before the replay, and mark done an event pending for ``ops``.
    """
    event = event_of(MINE, SESSION_A, 1)
    await put(operator, event)
    [row] = await replica.due("hook", None, 10)
    async with await psycopg.AsyncConnection.connect(pg_url) as other:
        # An operator's replay to "ops" of the event, made with the store's own statements.
        await other.execute(history._LOCK_EVENTS, ([event.id],))
        await other.execute(history._REPLAY, {"sink": "ops", "now": 6.0, "ids": [event.id]})
        ack = asyncio.create_task(replica.ack([row.id], history=[delivered(row.id)]))
        await wait_until_blocked(pg_url, other)
        await other.commit()
    await ack
    [kept] = await operator.history(HistoryQuery())
    assert kept.done_at is None
    assert [(s.sink, s.state) for s in kept.sinks] == [("hook", "delivered"), ("ops", "pending")]


async def test_a_replay_that_waits_for_an_ack_finds_the_event_done_and_undoes_it(
    pg_url: str, operator: PostgresStore
) -> None:
    event = event_of(MINE, SESSION_A, 1)
    await put(operator, event)
    [row] = await operator.due("hook", None, 10)
    async with await psycopg.AsyncConnection.connect(pg_url) as other:
        # A daemon's ack of the row, half made: its lock and delete, not yet its attempts.
        await other.execute(outbox._LOCK_EVENTS_OF_ROWS, ([row.id],))
        await other.execute("DELETE FROM deliveries WHERE id = %s", (row.id,))
        replay = asyncio.create_task(operator.replay("ops", [event.id], now=6.0))
        await wait_until_blocked(pg_url, other)
        await other.execute("UPDATE events SET done_at = 5.0 WHERE id = %s", (event.id,))
        await other.commit()
    assert await replay == [event.id]
    [kept] = await operator.history(HistoryQuery())
    assert (kept.done_at, [(s.sink, s.state) for s in kept.sinks]) == (None, [("ops", "pending")])


async def test_a_kept_event_detected_again_is_pending_again(operator: PostgresStore) -> None:
    event = event_of(MINE, SESSION_A, 1)
    await put(operator, event)
    [row] = await operator.due("hook", None, 10)
    await operator.ack([row.id], history=[delivered(row.id)])
    await put(operator, event, now=8.0)  # as before the history: its rows are made anew
    [kept] = await operator.history(HistoryQuery())
    assert (kept.done_at, kept.detected_at, kept.sinks[0].state) == (None, 1.0, "pending")


async def test_a_replay_that_waits_for_a_prune_skips_the_pruned_event(
    pg_url: str, operator: PostgresStore
) -> None:
    pruned, kept_on = event_of(MINE, SESSION_A, 1), event_of(MINE, SESSION_A, 2)
    await put(operator, pruned, kept_on)
    rows = await operator.backlog("hook", None, 10)
    await operator.ack([r.id for r in rows], history=[delivered(r.id) for r in rows])
    async with await psycopg.AsyncConnection.connect(pg_url) as other:
        await other.execute("DELETE FROM events WHERE id = %s", (pruned.id,))  # a prune, open
        replay = asyncio.create_task(operator.replay("ops", [pruned.id, kept_on.id], now=6.0))
        await wait_until_blocked(pg_url, other)
        await other.commit()
    assert await replay == [kept_on.id]  # and no foreign key error for the one pruned
    assert [d.event.id for d in await operator.due("ops", None, 10)] == [kept_on.id]


async def test_a_prune_beside_a_replay_under_way_skips_the_event_it_holds(
    pg_url: str, operator: PostgresStore
) -> None:
    replayed, done = event_of(MINE, SESSION_A, 1), event_of(MINE, SESSION_A, 2)
    await put(operator, replayed, done)
    rows = await operator.backlog("hook", None, 10)
    await operator.ack([r.id for r in rows], history=[delivered(r.id, at=5.0) for r in rows])
    async with await psycopg.AsyncConnection.connect(pg_url) as other:
        await other.execute(history._LOCK_EVENTS, ([replayed.id],))
        await other.execute(history._REPLAY, {"sink": "ops", "now": 6.0, "ids": [replayed.id]})
        assert await operator.prune_history(1000.0, 10.0) == 1  # without waiting for it
        await other.commit()
    assert [k.event.id for k in await operator.history(HistoryQuery())] == [replayed.id]
    assert [d.event.id for d in await operator.due("ops", None, 10)] == [replayed.id]


async def test_a_prune_deletes_in_batches_until_none_is_left(
    monkeypatch: pytest.MonkeyPatch, operator: PostgresStore
) -> None:
    monkeypatch.setattr(history, "PRUNE_BATCH", 2)
    old = [event_of(MINE, SESSION_A, n) for n in range(5)]
    young = event_of(MINE, SESSION_B, 9)
    await put(operator, *old, now=1.0)
    await put(operator, young, now=50.0)
    for event, at in [*((e, 2.0) for e in old), (young, 51.0)]:
        [row] = [d for d in await operator.backlog("hook", None, 10) if d.event.id == event.id]
        await operator.ack([row.id], history=[delivered(row.id, at=at)])
    assert await operator.prune_history(35.0, 5.0) == 5  # in batches of 2, 2 and 1
    assert [k.event.id for k in await operator.history(HistoryQuery())] == [young.id]


async def test_a_replay_in_batches_queues_every_event_in_its_original_order(
    monkeypatch: pytest.MonkeyPatch, operator: PostgresStore
) -> None:
    monkeypatch.setattr(history, "REPLAY_BATCH", 2)
    events = [event_of(MINE, SESSION_A, n) for n in range(5)]
    await put(operator, *events)
    rows = await operator.backlog("hook", None, 10)
    await operator.ack([r.id for r in rows], history=[delivered(r.id) for r in rows])
    wanted = [e.id for e in events]
    assert await operator.replay("ops", wanted[::-1], now=6.0) == wanted  # 3 statements
    assert [d.event.id for d in await operator.backlog("ops", None, 10)] == wanted


@pytest.mark.parametrize("second", ["ack", "purge"])
async def test_two_writes_that_each_end_one_of_an_events_rows_leave_it_done(
    pg_url: str, operator: PostgresStore, replica: PostgresStore, second: str
) -> None:
    """The first write (an ack of one row, half made) holds the event; the second (an ack or
    a purge of its other row) waits, then sees the first's row gone and marks the event done.

    Without the lock each would see the other's row and neither would: pending for ever.
    """
    event = event_of(MINE, SESSION_A, 1)
    await put(operator, event, sinks=("hook", "ops"))
    [hook] = await operator.due("hook", None, 10)
    [ops] = await operator.due("ops", None, 10)
    if second == "purge":
        refused = failed(hook.id, "dead")
        await replica.dead_letter(hook.id, error="HTTP 503", status=503, now=2.0, attempt=refused)
    first, last = (ops, hook) if second == "purge" else (hook, ops)
    async with await psycopg.AsyncConnection.connect(pg_url) as other:
        await other.execute(outbox._LOCK_EVENTS_OF_ROWS, ([first.id],))
        await other.execute("DELETE FROM deliveries WHERE id = %s", (first.id,))
        write: asyncio.Task[object] = asyncio.create_task(
            operator.purge([last.id])
            if second == "purge"
            else replica.ack([last.id], history=[delivered(last.id, 7.0)])
        )
        await wait_until_blocked(pg_url, other)
        await other.commit()
    await write
    [kept] = await operator.history(HistoryQuery())
    assert kept.done_at is not None and await operator.kept_events() == 1
    assert kept.done_at == 7.0 or second == "purge"  # a purge's is the wall clock


async def test_an_ack_keeping_its_attempts_takes_as_many_statements_as_one_keeping_none(
    monkeypatch: pytest.MonkeyPatch, replica: PostgresStore, operator: PostgresStore
) -> None:
    """Set-based: the same few statements for 1 row or 40, with or without their attempts."""
    statements: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def counted(self: psycopg.AsyncCursor[Any], query: Any, *args: Any, **kw: Any) -> Any:
        if str(query):  # not the pool's check of a connection it hands out ("")
            statements.append(str(query))
        return await execute(self, query, *args, **kw)

    await put(operator, *(event_of(MINE, f"KC{n:032d}", n) for n in range(41)))
    rows = await replica.due("hook", None, 100)
    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counted)
    counts = []
    for batch, keep in (
        (rows[:1], False),
        (rows[1:21], False),
        (rows[21:22], True),
        (rows[22:], True),
    ):
        statements.clear()
        await replica.ack(
            [r.id for r in batch], history=[delivered(r.id) for r in batch] if keep else None
        )
        counts.append(len(statements))
    assert counts == [4, 4, 4, 4]  # the event lock (with the Services), the fence, delete, done
    assert await operator.kept_events() == 20  # the 20 acked with their attempts
