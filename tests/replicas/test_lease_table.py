"""LeaseTable on a real PostgreSQL: acquire, renew, release and its NOTIFY, the replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest

from poller.errors import StateUnavailableError
from poller.state.postgres.db import Settings
from poller.state.postgres.leases import LeaseTable

TTL = 30.0
Tables = Callable[[], LeaseTable]


def expire(url: str, service_sid: str) -> None:
    """Make a lease row expire now, as the database's clock sees it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE leases SET expires_at = now() - interval '1 second' WHERE service_sid = %s",
            (service_sid,),
        )


async def test_a_free_service_is_acquired_at_epoch_1_and_a_held_one_is_refused(
    tables: Tables,
) -> None:
    table = tables()
    assert await table.acquire("KS1", "a", TTL) == 1
    assert await table.acquire("KS1", "b", TTL) is None
    assert await table.acquire("KS1", "a", TTL) is None  # held by a: not taken again
    [lease] = await table.list()
    assert (lease.service_sid, lease.owner, lease.epoch) == ("KS1", "a", 1)


async def test_an_expired_lease_is_taken_under_the_next_epoch(
    tables: Tables, migrated: str
) -> None:
    table = tables()
    assert await table.acquire("KS1", "a", TTL) == 1
    expire(migrated, "KS1")
    assert await table.free(["KS1", "KS2"]) == ["KS1", "KS2"]
    assert await table.acquire("KS1", "b", TTL) == 2
    assert await table.free(["KS1", "KS2"]) == ["KS2"]


async def test_renewal_extends_only_the_owners_lease_at_its_epoch_unexpired(
    tables: Tables, migrated: str
) -> None:
    table = tables()
    assert await table.acquire("KS1", "a", 5.0) == 1
    assert await table.renew("a", {"KS1": 1}, TTL) == {"KS1"}
    [lease] = await table.list()
    assert 25.0 < lease.expires_in <= TTL
    assert await table.renew("a", {"KS1": 0}, TTL) == set()  # a stale epoch
    assert await table.renew("b", {"KS1": 1}, TTL) == set()  # another owner
    assert await table.renew("a", {}, TTL) == set()
    expire(migrated, "KS1")
    assert await table.renew("a", {"KS1": 1}, TTL) == set()  # expired: too late
    assert await table.acquire("KS1", "b", TTL) == 2
    assert await table.renew("a", {"KS1": 1}, TTL) == set()  # the new owner's is safe


async def test_a_release_frees_the_lease_and_is_announced_to_the_others(
    tables: Tables,
) -> None:
    owner, other = tables(), tables()
    assert await other.wait(0.0) == []  # listening from here on
    assert await owner.acquire("KS1", "a", TTL) == 1
    assert await owner.acquire("KS2", "a", TTL) == 1
    assert await owner.release("b", {"KS1": 1}) == set()  # not b's to release
    assert await owner.release("a", {"KS1": 0}) == set()  # not at that epoch
    assert await other.wait(0.2) == []
    assert await owner.release("a", {"KS1": 1, "KS2": 1}) == {"KS1", "KS2"}
    assert sorted(await other.wait(5.0)) == ["KS1", "KS2"]
    assert await owner.wait(0.1) == []  # its own announcements are not its news
    leases = {lease.service_sid: lease for lease in await owner.list()}
    assert leases["KS1"].owner is None and leases["KS1"].expires_in <= 0
    assert await other.acquire("KS1", "b", TTL) == 2


async def test_list_gives_every_lease_or_those_asked_for(tables: Tables) -> None:
    table = tables()
    assert await table.list() == []
    for sid in ("KS2", "KS1", "KS3"):
        await table.acquire(sid, "a", TTL)
    assert [lease.service_sid for lease in await table.list()] == ["KS1", "KS2", "KS3"]
    assert [lease.service_sid for lease in await table.list(["KS3", "KS9"])] == ["KS3"]


async def test_live_replicas_count_their_unexpired_leases_and_a_leaver_is_gone(
    tables: Tables, migrated: str
) -> None:
    table = tables()
    await table.heartbeat("a", TTL)
    await table.heartbeat("b", TTL)
    await table.heartbeat("c", TTL)
    await table.acquire("KS1", "a", TTL)
    await table.acquire("KS2", "a", TTL)
    await table.acquire("KS3", "b", TTL)
    expire(migrated, "KS3")
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("UPDATE replicas SET expires_at = now() WHERE replica = 'c'")
    assert await table.live_replicas() == {"a": 2, "b": 0}
    await table.leave("a")
    assert await table.live_replicas() == {"b": 0}


async def test_replicas_long_expired_are_forgotten(tables: Tables, migrated: str) -> None:
    table = tables()
    await table.heartbeat("old", TTL)
    await table.heartbeat("recent", TTL)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(
            "UPDATE replicas SET expires_at = now() - interval '2 hours' WHERE replica = 'old'"
        )
        conn.execute(
            "UPDATE replicas SET expires_at = now() - interval '1 minute' WHERE replica = 'recent'"
        )
    await table.heartbeat("a", TTL)
    with psycopg.connect(migrated) as conn:
        rows = conn.execute("SELECT replica FROM replicas ORDER BY replica").fetchall()
    assert [r[0] for r in rows] == ["a", "recent"]


async def test_a_dropped_connection_fails_one_call_then_is_made_again(
    tables: Tables, migrated: str
) -> None:
    table, other = tables(), tables()
    await table.heartbeat("a", TTL)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'poller-test' AND datname = current_database()"
        )
    with pytest.raises(StateUnavailableError):
        await table.heartbeat("a", TTL)
    assert await table.acquire("KS1", "a", TTL) == 1
    await other.wait(0.0)  # other listens again on its new connection
    await table.release("a", {"KS1": 1})
    assert await other.wait(5.0) == ["KS1"]


async def test_a_cancelled_wait_leaves_the_connection_usable(tables: Tables) -> None:
    table, other = tables(), tables()
    await table.wait(0.0)
    waiting = asyncio.ensure_future(table.wait(30.0))
    await asyncio.sleep(0.05)  # into the wait for notifications (nothing to observe)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await table.acquire("KS1", "a", TTL) == 1
    await other.acquire("KS2", "b", TTL)
    await other.release("b", {"KS2": 1})
    assert await table.wait(5.0) == ["KS2"]


async def test_an_unreachable_database_is_unavailable_without_its_password() -> None:
    from tests.postgres import free_port

    url = f"postgresql://x:secret-7@127.0.0.1:{free_port()}/db"
    table = LeaseTable(Settings(url, connect_timeout=1))
    with pytest.raises(StateUnavailableError) as caught:
        await table.heartbeat("a", TTL)
    assert "secret-7" not in str(caught.value)
    with pytest.raises(StateUnavailableError):
        await table.wait(0.1)
    await table.close()


async def test_acquire_many_takes_the_free_and_expired_ones_and_leaves_the_held(
    tables: Tables, migrated: str
) -> None:
    table = tables()
    assert await table.acquire("KS1", "b", TTL) == 1
    assert await table.acquire("KS2", "b", TTL) == 1
    expire(migrated, "KS2")
    got = await table.acquire_many(["KS3", "KS2", "KS1"], "a", TTL)
    assert got == {"KS2": 2, "KS3": 1}
    assert await table.acquire_many([], "a", TTL) == {}
    owners = {lease.service_sid: lease.owner for lease in await table.list()}
    assert owners == {"KS1": "b", "KS2": "a", "KS3": "a"}


async def test_two_replicas_taking_overlapping_sets_at_once_share_them_out(
    tables: Tables,
) -> None:
    a, b = tables(), tables()
    services = [f"KS{i:03}" for i in range(200)]
    for _ in range(5):  # no deadlock, no Service twice, none left
        got_a, got_b = await asyncio.gather(
            a.acquire_many(services, "a", TTL), b.acquire_many(services[::-1], "b", TTL)
        )
        assert set(got_a).isdisjoint(got_b) and set(got_a) | set(got_b) == set(services)
        await a.release("a", got_a)
        await b.release("b", got_b)
