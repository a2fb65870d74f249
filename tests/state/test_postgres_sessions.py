"""PostgreSQL only: the session side's writes for a Service are fenced by its lease.

Each fenced write is tried by a replica whose lease does not hold (not held by its fence, an old
epoch, expired in the database, another replica's, no lease row, no longer trusted on its own
clock): it raises FencedError and the tables are exactly as they were (read with SQL). The
same write by the lease's holder, and by a store without a fence (an operator's), is made. A
takeover under way (the lease row locked by the new owner's update) holds the old owner's write
until it commits, and then refuses it. Lists come back in SID order (byte for byte, as in SQLite)
whatever the database's collation.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, fields
from typing import Any

import psycopg
import pytest
from psycopg import sql

from poller.errors import FencedError
from poller.state.models import SessionState
from poller.state.postgres import session_rows
from poller.state.postgres.db import Settings
from poller.state.postgres.fence import Fence
from poller.state.postgres.store import PostgresStore
from tests.clock import FakeClock
from tests.postgres import Server
from tests.state.cases import FP, OPEN, SERVICE, SESSION_A, SESSION_B, make_event

REPLICA = "replica-a"
EPOCH = 7
TABLES = (
    "watches",
    "sessions",
    "interactions",
    "session_fingerprints",
    "events",
    "deliveries",
    "slack_threads",
)

Write = Callable[[PostgresStore], Coroutine[Any, Any, object]]


@dataclass(frozen=True)
class Case:
    """A write for SERVICE, and what the state holds before it (made unfenced)."""

    setup: Write | None
    write: Write


async def _tracked(store: PostgresStore) -> None:
    await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)


async def _gone(store: PostgresStore) -> None:
    await _tracked(store)
    await store.mark_session_gone(SESSION_A, 2.0)


async def _commit_poll(store: PostgresStore) -> None:
    await store.commit_poll(
        SERVICE,
        SESSION_A,
        fetched={"KI1": FP},
        events=[(make_event(SESSION_A, 1), ["ops"])],
        now=5.0,
        status="open",
        session_fingerprint=OPEN,
    )


CASES = {
    "begin_watch": Case(
        None,
        lambda s: s.begin_watch(SERVICE, [SESSION_A], 5.0, fingerprints={SESSION_A: OPEN}),
    ),
    "ensure_session-new": Case(
        None, lambda s: s.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=5.0)
    ),
    "ensure_session-revive": Case(
        _gone, lambda s: s.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=5.0)
    ),
    "commit_poll": Case(_tracked, _commit_poll),
    "commit_poll-untracked": Case(None, _commit_poll),
    "commit_unchanged": Case(
        _tracked,
        lambda s: s.commit_unchanged(
            SERVICE, SESSION_A, now=5.0, status="open", session_fingerprint=OPEN
        ),
    ),
    "commit_unchanged-untracked": Case(
        None, lambda s: s.commit_unchanged(SERVICE, SESSION_A, now=5.0)
    ),
    "record_failure": Case(_tracked, lambda s: s.record_failure(SESSION_A, "503", 5.0)),
    "set_thread_ts": Case(_tracked, lambda s: s.set_thread_ts("slack", SESSION_A, "1.1")),
}

# What the fence holds (None: nothing), and the lease row (None: none): none lets it write.
REFUSED: dict[str, tuple[int | None, tuple[str, int, str] | None]] = {
    "not-held-by-the-fence": (None, (REPLICA, EPOCH, "1 minute")),
    "an-old-epoch": (EPOCH - 1, (REPLICA, EPOCH, "1 minute")),
    "expired-in-the-database": (EPOCH, (REPLICA, EPOCH, "-1 second")),
    "another-replicas": (EPOCH, ("replica-b", EPOCH, "1 minute")),
    "no-lease-row": (EPOCH, None),
}


def snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row the session side (and the outbox it fills) holds, read with SQL."""
    with psycopg.connect(url) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY 1, 2")
        return {t: conn.execute(query.format(sql.Identifier(t))).fetchall() for t in TABLES}


def set_lease(url: str, lease: tuple[str, int, str] | None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM leases")
        if lease is not None:
            owner, epoch, expires_in = lease
            conn.execute(
                "INSERT INTO leases (service_sid, owner, epoch, acquired_at, expires_at) "
                "VALUES (%s, %s, %s, now(), now() + %s::interval)",
                (SERVICE, owner, epoch, expires_in),
            )


@pytest.fixture
async def operator(pg_url: str) -> AsyncIterator[PostgresStore]:
    """A store without a fence on the test's database (what sets each case up)."""
    store = await PostgresStore.open(Settings(pg_url))
    yield store
    await store.close()


async def fenced_store(url: str, fence: Fence) -> PostgresStore:
    return await PostgresStore.open(Settings(url), fence=fence)


@pytest.mark.parametrize("name", list(CASES))
async def test_a_write_without_the_lease_raises_and_writes_nothing(
    name: str, pg_url: str, operator: PostgresStore
) -> None:
    case = CASES[name]
    if case.setup is not None:
        await case.setup(operator)
    before = snapshot(pg_url)
    fence = Fence(REPLICA)
    store = await fenced_store(pg_url, fence)
    try:
        for why, (held, lease) in REFUSED.items():
            set_lease(pg_url, lease)
            fence.drop(SERVICE)
            if held is not None:
                fence.hold(SERVICE, held, float("inf"))
            with pytest.raises(FencedError, match=f"{REPLICA} no longer holds the lease of"):
                await case.write(store)
            assert snapshot(pg_url) == before, why
    finally:
        await store.close()


@pytest.mark.parametrize("name", list(CASES))
async def test_a_write_whose_lease_is_no_longer_trusted_writes_nothing(
    name: str, pg_url: str, operator: PostgresStore
) -> None:
    case = CASES[name]
    if case.setup is not None:
        await case.setup(operator)
    set_lease(pg_url, (REPLICA, EPOCH, "1 minute"))  # the database would still say yes
    clock = FakeClock()
    fence = Fence(REPLICA, monotonic=clock.monotonic)
    fence.hold(SERVICE, EPOCH, clock.monotonic() + 10.0)
    clock.advance(10.0)  # the renewals stopped: the replica stops trusting its lease
    before = snapshot(pg_url)
    store = await fenced_store(pg_url, fence)
    try:
        with pytest.raises(FencedError) as raised:
            await case.write(store)
    finally:
        await store.close()
    assert raised.value.service_sids == (SERVICE,)
    assert snapshot(pg_url) == before


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("holder", ["the-lease-holder", "an-operator"])
async def test_the_holder_and_an_operator_make_the_write(
    name: str, holder: str, pg_url: str, operator: PostgresStore
) -> None:
    case = CASES[name]
    if case.setup is not None:
        await case.setup(operator)
    before = snapshot(pg_url)
    if holder == "an-operator":
        await case.write(operator)  # no fence, no lease row: no check
    else:
        set_lease(pg_url, (REPLICA, EPOCH, "1 minute"))
        fence = Fence(REPLICA)
        fence.hold(SERVICE, EPOCH, float("inf"))
        store = await fenced_store(pg_url, fence)
        try:
            await case.write(store)
        finally:
            await store.close()
    assert snapshot(pg_url) != before


async def test_the_holders_commit_poll_writes_the_known_set_and_the_outbox(pg_url: str) -> None:
    fence = Fence(REPLICA)
    fence.hold(SERVICE, EPOCH, float("inf"))
    store = await fenced_store(pg_url, fence)
    set_lease(pg_url, (REPLICA, EPOCH, "1 minute"))
    try:
        await _commit_poll(store)
        assert await store.known(SESSION_A) == {"KI1": FP}
    finally:
        await store.close()
    rows = snapshot(pg_url)
    assert [(r[1], r[2]) for r in rows["deliveries"]] == [(make_event(SESSION_A, 1).id, "ops")]
    assert [r[0] for r in rows["session_fingerprints"]] == [SESSION_A]


async def test_unknown_sessions_need_no_lease(pg_url: str) -> None:
    fence = Fence(REPLICA)  # holds nothing, and there is no lease row
    store = await fenced_store(pg_url, fence)
    try:
        await store.record_failure(SESSION_B, "503", 1.0)  # ignored, as without a fence
        await store.set_thread_ts("slack", SESSION_B, "1.1")  # owned by no one: kept
        assert await store.thread_ts("slack", SESSION_B) == "1.1"
    finally:
        await store.close()
    assert snapshot(pg_url)["sessions"] == []


async def test_the_unfenced_writes_need_no_lease(pg_url: str, operator: PostgresStore) -> None:
    await operator.begin_watch(SERVICE, [SESSION_A], 1.0)
    store = await fenced_store(pg_url, Fence(REPLICA))  # holds nothing
    try:
        await store.mark_session_gone(SESSION_A, 2.0)
        await store.revive_session(SESSION_A)
        await store.mark_session_gone(SESSION_A, 3.0)
        assert await store.prune(now=10.0, grace_seconds=1.0) == 1
        await store.set_sink_pace("slack", not_before=5.0, now=4.0)
        await store.end_watch(SERVICE)
        assert await store.sink_pace("slack") == (5.0, 4.0)
        assert await store.watch_begun(SERVICE) is None
    finally:
        await store.close()
    assert snapshot(pg_url)["sessions"] == []


async def _blocked_on_a_lock(url: str, application_name: str) -> None:
    """Return once a backend of ``application_name`` waits for a lock."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = %s AND wait_event_type = 'Lock'",
                (application_name,),
            )
            row = await cur.fetchone()
            if row is not None and row[0]:
                return
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("name", ["commit_poll", "commit_unchanged", "record_failure"])
async def test_a_takeover_under_way_holds_the_old_owners_write_and_then_refuses_it(
    name: str, pg_url: str, operator: PostgresStore
) -> None:
    case = CASES[name]
    if case.setup is not None:
        await case.setup(operator)
    fence = Fence(REPLICA)
    fence.hold(SERVICE, EPOCH, float("inf"))
    settings = Settings(pg_url, application_name="old-owner")
    store = await PostgresStore.open(settings, fence=fence)
    set_lease(pg_url, (REPLICA, EPOCH, "1 minute"))
    before = snapshot(pg_url)
    try:
        async with await psycopg.AsyncConnection.connect(pg_url) as takeover:
            await takeover.execute(
                "UPDATE leases SET owner = 'replica-b', epoch = epoch + 1 WHERE service_sid = %s",
                (SERVICE,),
            )  # not committed yet: the lease row is locked
            write = asyncio.create_task(case.write(store))
            await asyncio.wait_for(_blocked_on_a_lock(pg_url, "old-owner"), 10)
            await takeover.commit()
        with pytest.raises(FencedError):
            await asyncio.wait_for(write, 30)
    finally:
        await store.close()
    assert snapshot(pg_url) == before


@pytest.fixture
def icu_url(pg_server: Server) -> Iterator[str]:
    """A database whose default collation is ICU's en-US (``a`` sorts before ``B``)."""
    name = f"t_icu_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                "LOCALE 'C.UTF-8'"
            ).format(sql.Identifier(name))
        )
    try:
        yield pg_server.database_url(name)
    finally:
        pg_server.drop_database(name)


async def test_lists_are_in_sid_order_whatever_the_databases_collation(icu_url: str) -> None:
    sids = ["KC" + "B" * 32, "KC" + "a" * 32, "KC" + "0" * 32]
    services = ["KS" + "b" * 32, "KS" + "B" * 32]
    store = await PostgresStore.open(Settings(icu_url))
    try:
        for service_sid in services:
            await store.begin_watch(service_sid, [], 1.0)
        for sid in sids:
            await store.ensure_session(SERVICE, sid, new_traffic=False, now=1.0)
        assert [s.session_sid for s in await store.sessions()] == sorted(sids)
        assert [s.session_sid for s in await store.sessions(SERVICE)] == sorted(sids)
        assert await store.watched_services() == sorted(services)
        assert [sid for sid, _ in (await store.summary(now=2.0)).watches] == sorted(services)
    finally:
        await store.close()


def test_session_rows_are_read_in_the_order_of_session_states_fields() -> None:
    columns = session_rows.SESSION_COLUMNS.split(", ")
    assert columns == [f.name for f in fields(SessionState)]
    assert columns[session_rows.GONE_AT] == "gone_at"
