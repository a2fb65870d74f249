"""PostgreSQL only: migrations under the lock, connection errors, the fence."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from poller.errors import FencedError, StateError, StateUnavailableError
from poller.state.postgres import schema
from poller.state.postgres.db import Settings, connect
from poller.state.postgres.fence import Fence, check
from poller.state.postgres.store import PostgresStore


async def test_replicas_starting_together_apply_each_migration_once(pg_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(Settings(pg_url)) for _ in range(5)))
    for store in stores:
        await store.close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT version FROM poller_schema ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, schema.latest_version() + 1))


async def test_a_newer_schema_is_refused_and_left_alone(pg_url: str) -> None:
    await (await PostgresStore.open(Settings(pg_url))).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO poller_schema (version) VALUES (999)")
    with pytest.raises(StateError, match="schema version 999, newer"):
        await PostgresStore.open(Settings(pg_url))


async def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(StateUnavailableError, match="state database postgresql://x:\\*\\*\\*@"):
        await connect(Settings("postgresql://x:secret-3@127.0.0.1:1/db", connect_timeout=1))


async def test_the_fence_lets_the_owner_write_and_stops_anyone_else(pg_url: str) -> None:
    store = await PostgresStore.open(Settings(pg_url))
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO leases (service_sid, owner, epoch, expires_at) "
                "VALUES ('KS1', 'a', 3, now() + interval '1 minute')"
            )
        owner, stale, other = Fence("a"), Fence("a"), Fence("b")
        owner.hold("KS1", 3, float("inf"))
        stale.hold("KS1", 2, float("inf"))
        other.hold("KS1", 3, float("inf"))
        async with store.db.transaction() as cur:
            await check(cur, owner, ["KS1"])
        for fence in (stale, other, Fence("a")):
            with pytest.raises(FencedError):
                async with store.db.transaction() as cur:
                    await check(cur, fence, ["KS1"])
        untrusted = Fence("a", monotonic=lambda: 10.0)
        untrusted.hold("KS1", 3, 5.0)  # trusted until 5 on its clock, which says 10
        with pytest.raises(FencedError):
            async with store.db.transaction() as cur:
                await check(cur, untrusted, ["KS1"])
    finally:
        await store.close()


async def test_every_connection_cancels_long_statements_and_idle_transactions(
    pg_url: str,
) -> None:
    settings = Settings(pg_url, statement_timeout_ms=200, idle_in_transaction_timeout_ms=700)
    store = await PostgresStore.open(settings)
    try:
        shown = await store.db.read(
            "SELECT current_setting('statement_timeout'), "
            "current_setting('idle_in_transaction_session_timeout'), "
            "current_setting('application_name'), current_setting('jit')"
        )
        assert shown == [("200ms", "700ms", "poller", "off")]
        with pytest.raises(StateUnavailableError, match="statement timeout"):
            await store.db.read("SELECT pg_sleep(2)")
        assert await store.db.read("SELECT 1") == [(1,)]  # the pool goes on
    finally:
        await store.close()
