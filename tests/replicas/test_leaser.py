"""Leasers on one real PostgreSQL: the share, hand-overs, a frozen owner, the database away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from poller.errors import StateUnavailableError
from poller.observe.metrics import REGISTRY
from poller.replicas.leaser import TRUST, Leaser
from poller.state.postgres.db import Settings
from poller.state.postgres.fence import Fence
from poller.state.postgres.leases import LeaseTable
from tests.clock import FakeClock
from tests.postgres import free_port
from tests.replicas.helpers import FrozenLoop, eventually

LEASE = 3.0
SERVICES = [f"KS{i}" for i in range(6)]
Make = Callable[..., Leaser]


class Changes:
    """What on_change heard, per replica: (service, owned) in order."""

    def __init__(self) -> None:
        self.heard: dict[str, list[tuple[str, bool]]] = {}

    def of(self, replica: str) -> Callable[[str, bool], None]:
        return lambda sid, owned: self.heard.setdefault(replica, []).append((sid, owned))


class Sampler:
    """Counts, as often as the loop lets it, the moments two leasers trusted one Service."""

    def __init__(self, leasers: Sequence[Leaser], services: Iterable[str] = SERVICES) -> None:
        self.leasers = list(leasers)
        self.services = list(services)
        self.samples = 0
        self.doubles: list[tuple[str, list[str]]] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            for sid in self.services:
                owners = [leaser.replica for leaser in self.leasers if leaser.owns(sid)]
                if len(owners) > 1:
                    self.doubles.append((sid, owners))
            self.samples += 1
            await asyncio.sleep(0.002)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def make(tables: Callable[[], LeaseTable]) -> AsyncIterator[Make]:
    """Make leasers on the test's database (each with a table of its own); stopped after."""
    made: list[Leaser] = []

    def build(replica: str, **kwargs: Any) -> Leaser:
        table = kwargs.pop("table", None) or tables()
        monotonic = kwargs.pop("monotonic", time.monotonic)
        leaser = Leaser(
            table,
            Fence(replica, monotonic=monotonic),
            replica,
            kwargs.pop("lease_seconds", LEASE),
            kwargs.pop("interval_seconds", 30.0),
            monotonic=monotonic,
        )
        made.append(leaser)
        return leaser

    yield build
    for leaser in made:
        await leaser.stop()


def owned(leaser: Leaser, services: Iterable[str] = SERVICES) -> set[str]:
    return {sid for sid in services if leaser.owns(sid)}


def db_leases(url: str) -> dict[str, tuple[str | None, int]]:
    """Every unexpired lease in the database: service -> (owner, epoch)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT service_sid, owner, epoch FROM leases WHERE expires_at > now()"
        ).fetchall()
    return {str(sid): (owner, int(epoch)) for sid, owner, epoch in rows}


def events(logs: Sequence[Mapping[str, Any]], name: str, **fields: Any) -> list[Mapping[str, Any]]:
    return [
        entry
        for entry in logs
        if entry["event"] == name and all(entry.get(k) == v for k, v in fields.items())
    ]


async def test_two_replicas_share_six_services_three_and_three(make: Make, migrated: str) -> None:
    changes = Changes()
    a, b = make("a"), make("b")
    await asyncio.gather(a.start(SERVICES, changes.of("a")), b.start(SERVICES, changes.of("b")))
    await eventually(lambda: len(owned(a)) == 3 and len(owned(b)) == 3, what="3/3")
    assert owned(a) | owned(b) == set(SERVICES)
    leases = db_leases(migrated)
    assert {sid for sid, (owner, _) in leases.items() if owner == "a"} == owned(a)
    assert {sid for sid, (owner, _) in leases.items() if owner == "b"} == owned(b)
    heard = {sid for sid, gained in changes.heard["a"] if gained} - {
        sid for sid, gained in changes.heard["a"] if not gained
    }
    assert heard == owned(a)
    assert a.reachable and b.reachable


async def test_a_third_replica_takes_its_share_with_never_two_owners(
    make: Make, migrated: str
) -> None:
    a, b, c = make("a"), make("b"), make("c")
    await asyncio.gather(a.start(SERVICES, lambda *_: None), b.start(SERVICES, lambda *_: None))
    await eventually(lambda: len(owned(a)) == 3 and len(owned(b)) == 3, what="3/3")
    before = db_leases(migrated)
    sampler = Sampler([a, b, c])
    with capture_logs() as logs:
        await c.start(SERVICES, lambda *_: None)
        await eventually(lambda: [len(owned(x)) for x in (a, b, c)] == [2, 2, 2], what="2/2/2")
    await sampler.stop()
    assert sampler.doubles == [] and sampler.samples > 10
    assert owned(a) | owned(b) | owned(c) == set(SERVICES)
    released = events(logs, "lease_released", reason="rebalance")
    assert sorted(entry["replica"] for entry in released) == ["a", "b"]
    taken = events(logs, "lease_acquired", replica="c")
    assert sorted(entry["service_sid"] for entry in taken) == sorted(owned(c))
    assert all(entry["epoch"] == before[entry["service_sid"]][1] + 1 for entry in taken)


async def test_a_hand_over_waits_for_the_givers_work_to_settle_before_releasing(
    make: Make, migrated: str
) -> None:
    a, b = make("a"), make("b")
    cycles_done = asyncio.Event()
    settling: list[str] = []

    async def settle(sid: str) -> None:  # a's cycle of ``sid`` still calls Twilio
        settling.append(sid)
        await cycles_done.wait()

    await a.start(SERVICES, lambda *_: None, settle)
    await eventually(lambda: owned(a) == set(SERVICES), what="a owns all")
    await b.start(SERVICES, lambda *_: None)
    await eventually(lambda: len(settling) == 3, what="a gives three up")
    # a trusts them no more, yet none is released: b cannot take them while a's work runs.
    assert len(owned(a)) == 3 and owned(b) == set()
    assert {owner for owner, _ in db_leases(migrated).values()} == {"a"}
    cycles_done.set()
    await eventually(lambda: owned(b) == set(settling), what="b takes what a gave up")


async def test_a_clean_stop_hands_every_service_over_within_two_seconds(
    make: Make, migrated: str
) -> None:
    a, b = make("a"), make("b")
    await asyncio.gather(a.start(SERVICES, lambda *_: None), b.start(SERVICES, lambda *_: None))
    await eventually(lambda: len(owned(a)) == 3 and len(owned(b)) == 3, what="3/3")
    held_by_a = owned(a)
    epochs = db_leases(migrated)
    with capture_logs() as logs:
        await a.stop()
        took = await eventually(lambda: owned(b) == set(SERVICES), what="b owns all")
    assert took < 2.0
    assert owned(a) == set()
    stopped = events(logs, "lease_released", reason="stop", replica="a")
    assert {entry["service_sid"] for entry in stopped} == held_by_a
    # Released at the epochs held (whoever took the Services first at the start).
    assert all(entry["epoch"] == epochs[entry["service_sid"]][1] for entry in stopped)
    assert {owner for owner, _ in db_leases(migrated).values()} == {"b"}
    await a.stop()  # twice is harmless


async def test_a_frozen_owner_stops_trusting_in_time_and_steps_down_when_woken(
    make: Make, migrated: str
) -> None:
    frozen = FrozenLoop()
    b = make("b")
    try:
        await frozen.run(b.start(SERVICES, lambda *_: None))
        assert owned(b) == set(SERVICES)
        a = make("a")
        await a.start(SERVICES, lambda *_: None)
        sampler = Sampler([a, b])
        with capture_logs() as logs:
            frozen.freeze()
            distrusted = await eventually(lambda: owned(b) == set(), what="b distrusts")
            assert distrusted <= TRUST * LEASE + 0.2  # at most 2/3 lease after its last renewal
            assert owned(a) == set()  # the database has not let the lease go yet
            took = await eventually(lambda: owned(a) == set(SERVICES), what="a takes over")
            assert took <= LEASE + LEASE / 3 + 1.0
            assert all(owner == "a" and epoch == 2 for owner, epoch in db_leases(migrated).values())
            frozen.thaw()
            await eventually(lambda: len(events(logs, "lease_lost", replica="b")) == 6)
            await eventually(lambda: len(owned(a)) == 3 and len(owned(b)) == 3, what="3/3")
        await sampler.stop()
        assert sampler.doubles == []
        lost = events(logs, "lease_lost", replica="b")
        assert {entry["service_sid"] for entry in lost} == set(SERVICES)
        assert {entry["epoch"] for entry in lost} == {1}
        assert {entry["reason"] for entry in lost} <= {"taken", "unavailable"}
        assert ("b", 1) not in set(db_leases(migrated).values())
    finally:
        frozen.thaw()
        await frozen.run(b.stop())
        frozen.close()


async def test_an_unreachable_database_says_so_once_per_interval(make: Make) -> None:
    clock = FakeClock()
    url = f"postgresql://x:secret-9@127.0.0.1:{free_port()}/db"
    table = LeaseTable(Settings(url, connect_timeout=1))
    leaser = make(
        "a", table=table, lease_seconds=0.6, interval_seconds=10.0, monotonic=clock.monotonic
    )
    with capture_logs() as logs:
        await leaser.start(SERVICES, lambda *_: None)
        assert not leaser.reachable and owned(leaser) == set()
        await eventually(lambda: leaser.rounds >= 4, what="three more rounds")
        assert len(events(logs, "state_unavailable")) == 1
        clock.advance(10.0)
        rounds = leaser.rounds
        await eventually(lambda: leaser.rounds > rounds + 1, what="a round after the interval")
    said = events(logs, "state_unavailable", replica="a")
    assert len(said) == 2
    assert "secret-9" not in said[0]["error"] and "\n" not in said[0]["error"]
    assert "127.0.0.1" in said[0]["location"]


class Flaky(LeaseTable):
    """A lease table that cannot reach the database while ``down``."""

    down = False

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self.down:
            raise StateUnavailableError("state database: connection refused")
        return await super()._run(sql, params)


async def round_done(leaser: Leaser) -> None:
    """Make the leaser do one round now (a reload of the same Services wakes it)."""
    rounds = leaser.rounds
    await leaser.set_services(sorted(leaser._services))
    await eventually(lambda: leaser.rounds > rounds, what="a round")


async def test_trust_runs_out_while_the_database_is_away_and_resumes_when_back(
    make: Make, migrated: str
) -> None:
    clock = FakeClock()
    changes = Changes()
    table = Flaky(Settings(migrated))
    leaser = make("a", table=table, lease_seconds=30.0, monotonic=clock.monotonic)
    lost_before = REGISTRY.get_sample_value("poller_lease_changes_total", {"reason": "lost"}) or 0
    await leaser.start(["KS1", "KS2"], changes.of("a"))
    assert owned(leaser, ["KS1", "KS2"]) == {"KS1", "KS2"}
    assert REGISTRY.get_sample_value("poller_leases_held") == 2
    with capture_logs() as logs:
        table.down = True
        await round_done(leaser)
        assert not leaser.reachable and owned(leaser, ["KS1"]) == {"KS1"}  # trusted a while
        clock.advance(TRUST * 30.0)
        assert owned(leaser, ["KS1", "KS2"]) == set()  # the fence, at once
        await round_done(leaser)
        lost = events(logs, "lease_lost", reason="unavailable")
        assert sorted((e["service_sid"], e["epoch"]) for e in lost) == [("KS1", 1), ("KS2", 1)]
        table.down = False
        await round_done(leaser)
    assert leaser.reachable and owned(leaser, ["KS1", "KS2"]) == {"KS1", "KS2"}
    resumed = events(logs, "lease_acquired", resumed=True)
    assert sorted((e["service_sid"], e["epoch"]) for e in resumed) == [("KS1", 1), ("KS2", 1)]
    assert len(events(logs, "state_available")) == 1
    assert changes.heard["a"][-4:] == [("KS1", False), ("KS2", False), ("KS1", True), ("KS2", True)]
    lost_after = REGISTRY.get_sample_value("poller_lease_changes_total", {"reason": "lost"})
    assert lost_after == lost_before + 2


async def test_after_an_outage_past_the_lease_the_services_are_acquired_anew(
    make: Make, pg_cluster: Any
) -> None:
    from poller.state.postgres import schema
    from poller.state.postgres.db import connect

    conn = await connect(Settings(pg_cluster.url))
    await schema.migrate(conn)
    await conn.close()
    leaser = make("a", table=LeaseTable(Settings(pg_cluster.url, connect_timeout=1)))
    await leaser.start(["KS1", "KS2"], lambda *_: None)
    assert owned(leaser, ["KS1", "KS2"]) == {"KS1", "KS2"}
    with capture_logs() as logs:
        await asyncio.to_thread(pg_cluster.stop)
        await eventually(lambda: not leaser.reachable, what="unreachable")
        await eventually(lambda: events(logs, "lease_lost", reason="unavailable"), what="lost")
        assert owned(leaser, ["KS1", "KS2"]) == set()
        # The leases must expire on the database's clock while it is away.
        await asyncio.sleep(LEASE)
        await asyncio.to_thread(pg_cluster.start)
        await eventually(lambda: owned(leaser, ["KS1", "KS2"]) == {"KS1", "KS2"}, what="again")
    assert leaser.reachable
    assert events(logs, "state_available", replica="a")
    assert len(events(logs, "state_unavailable")) == 1  # one interval (30 s) did not pass
    again = events(logs, "lease_acquired", replica="a")
    assert sorted((e["service_sid"], e["epoch"]) for e in again) == [("KS1", 2), ("KS2", 2)]
    assert db_leases(pg_cluster.url) == {"KS1": ("a", 2), "KS2": ("a", 2)}


async def test_an_unwatched_service_is_released_to_a_replica_that_watches_it(
    make: Make, migrated: str
) -> None:
    a, b = make("a"), make("b")
    await a.start(["KS1", "KS2"], lambda *_: None)
    await b.start(["KS1", "KS2"], lambda *_: None)
    await eventually(lambda: len(owned(a, ["KS1", "KS2"])) == 1, what="1/1")
    [mine] = owned(a, ["KS1", "KS2"])
    with capture_logs() as logs:
        await a.set_services([sid for sid in ("KS1", "KS2") if sid != mine])
        assert not a.owns(mine)
        took = await eventually(lambda: b.owns(mine), what="b takes it")
    # a, below its share, does not want it: b takes it once it stayed free for a round (about
    # 1 s), well before a lease (3 s) passed.
    assert took < LEASE - 0.5
    assert events(logs, "lease_released", reason="unwatched", service_sid=mine, replica="a")
    assert db_leases(migrated)[mine] == ("b", 2)


async def test_a_failing_on_change_is_said_and_the_leases_go_on(make: Make) -> None:
    def broken(sid: str, owned: bool) -> None:
        raise RuntimeError("a bug in the daemon")

    leaser = make("a")
    with capture_logs() as logs:
        await leaser.start(["KS1", "KS2"], broken)
        await round_done(leaser)
    assert owned(leaser, ["KS1", "KS2"]) == {"KS1", "KS2"} and leaser.reachable
    failed = events(logs, "ownership_callback_failed", error_type="RuntimeError")
    assert sorted(entry["service_sid"] for entry in failed) == ["KS1", "KS2"]


async def test_four_thousand_services_are_taken_at_once_and_kept(make: Make) -> None:
    services = [f"KS{i:05}" for i in range(4000)]
    leaser = make("a")
    with capture_logs() as logs:
        await leaser.start(services, lambda *_: None)
        assert len(owned(leaser, services)) == 4000  # one round, one statement
        rounds = leaser.rounds
        await eventually(lambda: leaser.rounds >= rounds + 3, within=30, what="three renewals")
    assert len(owned(leaser, services)) == 4000 and leaser.reachable
    assert events(logs, "lease_lost") == [] and events(logs, "state_unavailable") == []


async def test_a_stop_during_the_first_round_leaves_nothing_running_or_held(
    make: Make, migrated: str
) -> None:
    leaser = make("a")
    await asyncio.gather(leaser.start(SERVICES, lambda *_: None), leaser.stop())
    assert leaser._task is None and owned(leaser) == set()
    assert db_leases(migrated) == {}


async def test_a_service_no_longer_watched_is_owned_until_its_pending_deliveries_went(
    make: Make, migrated: str
) -> None:
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (id, service_sid, session_sid, body, type, created_at) "
            "VALUES ('ev1', 'KS9', 'KC1', '{}', 'interaction.created', 1)"
        )
        conn.execute(
            "INSERT INTO deliveries (event_id, sink, service_sid, session_sid, enqueued_at, "
            "next_attempt_at) VALUES ('ev1', 'ops', 'KS9', 'KC1', 1, 1)"
        )
    a = make("a")
    with capture_logs() as logs:
        await a.start(SERVICES, lambda *_: None)
        await eventually(lambda: a.owns("KS9"), what="a owns the unwatched KS9")
        with psycopg.connect(migrated, autocommit=True) as conn:
            conn.execute("DELETE FROM deliveries")  # delivered: nothing keeps KS9 any more
        a._wake.set()
        await eventually(lambda: not a.owns("KS9"), what="a gives KS9 up")
        await eventually(lambda: "KS9" not in db_leases(migrated), what="KS9 released")
    assert events(logs, "lease_released", service_sid="KS9", reason="unwatched")
    assert owned(a) == set(SERVICES)
