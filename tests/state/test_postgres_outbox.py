"""PostgreSQL only, the outbox under leases: a fenced store delivers and writes for its own
Services only; an operator's store (no fence) sees and changes every row.

Lease rows are written with SQL, as the lease keeper would; rows are enqueued with the poll's
own ``enqueue`` in a transaction of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from poller.errors import FencedError
from poller.events import Event
from poller.state.postgres.db import Settings
from poller.state.postgres.enqueue import enqueue
from poller.state.postgres.fence import Fence
from poller.state.postgres.store import PostgresStore
from tests.state.cases import OTHER_SERVICE, SERVICE, SESSION_A, SESSION_B, ids_of, make_event

MINE, THEIRS = SERVICE, OTHER_SERVICE
EPOCH = 4


def event_of(service_sid: str, session_sid: str, n: int) -> Event:
    return dataclasses.replace(make_event(session_sid, n), service_sid=service_sid)


def lease(url: str, service_sid: str, owner: str, epoch: int, expires_in: float) -> None:
    """Write the lease row of ``service_sid``, expiring ``expires_in`` s from the DB's now()."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO leases (service_sid, owner, epoch, acquired_at, expires_at) "
            "VALUES (%s, %s, %s, now(), now() + make_interval(secs => %s)) "
            "ON CONFLICT (service_sid) DO UPDATE SET owner = excluded.owner, "
            "epoch = excluded.epoch, expires_at = excluded.expires_at",
            (service_sid, owner, epoch, expires_in),
        )


@pytest.fixture
async def operator(pg_url: str) -> AsyncIterator[PostgresStore]:
    """A store without a fence (an operator's command), with MINE leased to replica "a"."""
    store = await PostgresStore.open(Settings(pg_url))
    lease(pg_url, MINE, "a", EPOCH, 60)
    lease(pg_url, THEIRS, "b", 1, 60)
    yield store
    await store.close()


@pytest.fixture
async def replica(pg_url: str, operator: PostgresStore) -> AsyncIterator[PostgresStore]:
    """Replica "a"'s store: its fence holds MINE at EPOCH."""
    fence = Fence("a")
    fence.hold(MINE, EPOCH, float("inf"))
    store = await PostgresStore.open(Settings(pg_url), fence=fence)
    yield store
    await store.close()


async def put(
    store: PostgresStore, *events: Event, sinks: tuple[str, ...] = ("hook",), now: float = 1.0
) -> None:
    async with store.db.transaction() as cur:
        await enqueue(cur, [(event, list(sinks)) for event in events], now=now)


async def test_a_fenced_store_hands_out_only_its_services_rows(
    replica: PostgresStore, operator: PostgresStore
) -> None:
    mine = [event_of(MINE, SESSION_A, n) for n in (1, 2)]
    theirs = [event_of(THEIRS, SESSION_B, n) for n in (3, 4)]
    await put(operator, mine[0], theirs[0], mine[1], theirs[1])

    assert [d.event.id for d in await replica.due("hook", 1.0, 10)] == [mine[0].id]
    assert [d.event.id for d in await replica.backlog("hook", None, 10)] == [e.id for e in mine]
    everything = [mine[0].id, theirs[0].id, mine[1].id, theirs[1].id]
    assert [d.event.id for d in await operator.backlog("hook", None, 10)] == everything
    assert [d.event.id for d in await operator.due("hook", None, 10)] == everything[:2]


async def test_a_fenced_store_counts_only_its_services_rows(
    replica: PostgresStore, operator: PostgresStore
) -> None:
    await put(operator, event_of(THEIRS, SESSION_B, 3), event_of(THEIRS, SESSION_B, 4))
    await put(operator, event_of(MINE, SESSION_A, 1), now=5.0)
    # A replica's gauges, readiness and `once` count its own Services; an operator, all.
    assert (await replica.pending_count(), await operator.pending_count()) == (1, 3)
    assert await replica.pending_count("hook") == 1
    assert await replica.counts_by_sink("pending") == {"hook": 1}
    assert await operator.counts_by_sink("pending") == {"hook": 3}
    assert await replica.oldest_pending_enqueued_at() == 5.0
    assert await operator.oldest_pending_enqueued_at() == 1.0


async def test_a_fence_holding_nothing_sees_nothing(
    pg_url: str, operator: PostgresStore, replica: PostgresStore
) -> None:
    await put(operator, event_of(MINE, SESSION_A, 1))
    untrusted = Fence("a", monotonic=lambda: 10.0)
    untrusted.hold(MINE, EPOCH, 5.0)  # its own clock stopped trusting the lease
    for fence in (Fence("a"), untrusted):
        store = await PostgresStore.open(Settings(pg_url), fence=fence)
        try:
            assert await store.due("hook", None, 10) == []
            assert await store.backlog("hook", None, 10) == []
            assert await store.shift_due_times(30.0) == 0
        finally:
            await store.close()
    assert len(await replica.due("hook", None, 10)) == 1


async def test_a_clock_step_moves_only_the_owned_services_rows(
    replica: PostgresStore, operator: PostgresStore
) -> None:
    await put(operator, event_of(MINE, SESSION_A, 1), event_of(THEIRS, SESSION_B, 2))
    assert await replica.shift_due_times(30.0) == 1
    times = {d.event.service_sid: d.next_attempt_at for d in await operator.due("hook", None, 9)}
    assert times == {MINE: 31.0, THEIRS: 1.0}
    assert await operator.shift_due_times(-1.0) == 2


Write = Callable[[PostgresStore, int], Awaitable[None]]
WRITES: dict[str, Write] = {
    "ack": lambda store, rid: store.ack([rid]),
    "retry": lambda store, rid: store.retry_later(rid, next_attempt_at=9.0, error="e", status=503),
    "dead": lambda store, rid: store.dead_letter(rid, error="e", status=410, now=9.0),
}


@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("lost", ["other owner", "old epoch", "expired", "not held"])
async def test_a_write_for_a_service_not_held_writes_nothing(
    pg_url: str, operator: PostgresStore, replica: PostgresStore, write: str, lost: str
) -> None:
    await put(operator, event_of(MINE, SESSION_A, 1))
    before = await operator.backlog("hook", None, 10)
    if lost == "other owner":
        lease(pg_url, MINE, "b", EPOCH + 1, 60)  # taken over
    elif lost == "old epoch":
        lease(pg_url, MINE, "a", EPOCH + 1, 60)  # lost and taken again since
    elif lost == "expired":
        lease(pg_url, MINE, "a", EPOCH, -1)  # by the database's clock
    else:
        assert replica.fence is not None
        replica.fence.drop(MINE)
    with pytest.raises(FencedError) as raised:
        await WRITES[write](replica, before[0].id)
    assert raised.value.service_sids == (MINE,)
    assert await operator.backlog("hook", None, 10) == before
    assert await operator.dead_letters() == []


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_the_owner_writes_at_its_epoch(
    replica: PostgresStore, operator: PostgresStore, write: str
) -> None:
    await put(operator, event_of(MINE, SESSION_A, 1))
    [row] = await replica.due("hook", None, 10)
    await WRITES[write](replica, row.id)
    after = {
        "ack": ([], []),
        "retry": ([(row.id, 1, 9.0)], []),
        "dead": ([], [row.id]),
    }[write]
    pending = [
        (d.id, d.attempts, d.next_attempt_at) for d in await operator.backlog("hook", None, 9)
    ]
    assert (pending, ids_of(await operator.dead_letters())) == after


async def test_an_ack_with_one_row_not_held_deletes_none(
    replica: PostgresStore, operator: PostgresStore
) -> None:
    await put(operator, event_of(MINE, SESSION_A, 1), event_of(THEIRS, SESSION_B, 2))
    rows = await operator.due("hook", None, 10)
    with pytest.raises(FencedError):
        await replica.ack(ids_of(rows))
    assert await operator.due("hook", None, 10) == rows


async def test_operator_writes_are_not_fenced(pg_url: str, operator: PostgresStore) -> None:
    await put(operator, event_of(THEIRS, SESSION_B, 1), event_of(THEIRS, SESSION_B, 2))
    store = await PostgresStore.open(Settings(pg_url), fence=Fence("a"))  # holds nothing
    try:
        assert await store.dead_letter_other_sinks(["elsewhere"], now=5.0) == 2
        first, second = ids_of(await operator.dead_letters())
        assert await store.requeue([first], now=6.0) == 1
        assert await store.purge([second]) == 1
        await store.record_sink_disabled("hook", status=410, reason="gone", now=7.0)
        assert [d.sink for d in await store.clear_sink_disabled()] == ["hook"]
    finally:
        await store.close()
    assert ids_of(await operator.due("hook", None, 10)) == [first]
    assert await operator.dead_letters() == []


async def test_a_retry_of_a_row_purged_meanwhile_leaves_it_gone(
    pg_url: str, operator: PostgresStore, replica: PostgresStore
) -> None:
    await put(operator, event_of(MINE, SESSION_A, 1))
    [row] = await replica.due("hook", None, 10)
    async with await psycopg.AsyncConnection.connect(pg_url) as other:
        # An operator's transaction dead-letters and purges the row, and has not committed.
        await other.execute(
            "UPDATE deliveries SET state = 'dead', dead_at = 2 WHERE id = %s", (row.id,)
        )
        await other.execute("DELETE FROM deliveries WHERE id = %s", (row.id,))
        retry = asyncio.create_task(
            replica.retry_later(row.id, next_attempt_at=9.0, error="e", status=503)
        )
        await wait_until_blocked(pg_url, other)
        assert not retry.done()
        await other.commit()
    await retry
    assert await operator.pending_count() == 0
    assert await operator.dead_letters() == []


async def wait_until_blocked(url: str, conn: psycopg.AsyncConnection[Any]) -> None:
    """Return once another backend waits for a lock this connection's transaction holds."""
    me = conn.info.backend_pid
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as probe:
        for _ in range(500):
            cursor = await probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (me,),
            )
            row = await cursor.fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("nothing waited for the transaction's locks")
