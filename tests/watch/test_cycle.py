"""One cycle of one Service: the request budget, the first start's baseline, its progress."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from poller.config import PollConfig
from poller.detect.planner import PlanSettings
from poller.errors import FencedError
from poller.observe import metrics
from poller.state.base import StateStore
from poller.state.memory.store import MemoryStore
from poller.state.sqlite import schema
from poller.state.sqlite.db import open_database
from poller.state.sqlite.store import SqliteStore
from poller.twilio.records import Interaction, Session
from poller.watch.cycle import ServiceCycle
from poller.watch.poll import SessionPoller

SERVICE = "KS" + "a" * 32
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def sid(n: int) -> str:
    return f"KC{n:032x}"


def interaction(n: int, session: str, created: str) -> Interaction:
    record = Interaction.from_api(
        {
            "sid": f"KI{n:032x}",
            "session_sid": session,
            "service_sid": SERVICE,
            "type": "message",
            "date_created": created,
            "date_updated": created,
            "outbound_resource_status": "delivered",
        }
    )
    assert record is not None
    return record


class FakeProxy:
    """Sessions and their interactions; each Interactions list takes ``delay`` seconds, one at
    a time (a stand-in for the rate limiter)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.interactions: dict[str, list[Interaction]] = {}
        self.last: dict[str, str | None] = {}
        self.polled: list[str] = []
        self._delay = delay
        self._made = 0
        self._one_at_a_time = asyncio.Lock()

    def add(self, session: str, created: str) -> Interaction:
        self._made += 1
        record = interaction(self._made, session, created)
        self.interactions.setdefault(session, []).append(record)
        self.last[session] = created
        return record

    async def list_sessions(self, service_sid: str) -> list[Session]:
        return [_session(s, last) for s, last in self.last.items()]

    async def list_interactions(self, service_sid: str, session_sid: str) -> list[Interaction]:
        async with self._one_at_a_time:
            self.polled.append(session_sid)
            if self._delay:
                await asyncio.sleep(self._delay)
            return list(self.interactions.get(session_sid, []))


def _session(session: str, last: str | None) -> Session:
    record = Session.from_api(
        {
            "sid": session,
            "service_sid": SERVICE,
            "status": "in-progress",
            "date_created": "2026-01-01T00:00:00Z",
            "date_updated": "2026-01-01T00:00:00Z",
            "date_last_interaction": last,
        }
    )
    assert record is not None
    return record


@dataclass(frozen=True)
class AllEvents:
    name: str = "ops"
    events: tuple[str, ...] = ("interaction.created", "interaction.updated")
    filter: None = None
    include_data: bool = True


@dataclass(frozen=True)
class AllSessions:
    service_sid: str = SERVICE
    sessions: tuple[str, ...] = ()
    all_sessions: bool = True


@pytest.fixture
async def store() -> AsyncIterator[StateStore]:
    async with MemoryStore() as opened:
        yield opened


def cycle_of(
    store: StateStore,
    proxy: FakeProxy,
    *,
    rate: float | None = 10.0,
    timeout: float = 5.0,
    concurrency: int = 8,
    clock: Any = lambda: NOW,
    owns: Any = lambda _sid: True,
) -> ServiceCycle:
    poll = PollConfig(first_run="baseline", settle_seconds=900.0, timeout_seconds=timeout)
    poller = SessionPoller(proxy, store, poll, [AllEvents()], clock=clock)
    plan = PlanSettings(interval_seconds=10, full_sweep_seconds=3600, requests_per_second=rate)
    return ServiceCycle(
        AllSessions(),
        proxy,
        poller,
        store,
        plan,
        page_size=1000,
        concurrency=concurrency,
        clock=clock,
        owns=owns,
    )


async def notified(store: StateStore) -> list[str]:
    return [d.event.interaction_sid for d in await store.due("ops", None, 1000)]


async def test_a_cycle_polls_no_more_than_its_budget_and_baselines_in_the_background(
    store: StateStore,
) -> None:
    proxy = FakeProxy()
    for n in range(200):
        proxy.add(sid(n), "2026-11-27T10:00:00Z")
    cycle = cycle_of(store, proxy)  # 10 requests/s x 10 s x 0.85 = 85, less 1 page: 84 polls
    with capture_logs() as logs:
        first = await cycle.run()
        second = await cycle.run()
        third = await cycle.run()
    assert (first.planned, second.planned, third.planned) == (84, 84, 32 + 1)  # + the sweep
    assert sorted(proxy.polled[:200]) == sorted(sid(n) for n in range(200))
    progress = [
        (e["done"], e["left"], e["eta_seconds"]) for e in logs if e["event"] == "baseline_progress"
    ]
    assert progress == [(84, 116, 20), (168, 32, 10), (200, 0, 0)]
    assert metrics.BASELINE_PENDING._value.get() == 0
    assert await notified(store) == []  # the history existed: nothing is an event


async def test_activity_before_the_baseline_is_fetched_at_once_and_split_by_twilios_clock(
    store: StateStore,
) -> None:
    proxy = FakeProxy()
    for n in range(299):
        proxy.add(sid(n), "2026-11-27T10:00:00Z")
    idle = sid(299)
    proxy.add(idle, "2026-11-01T09:00:00Z")  # the least recently active: baselined last...
    cycle = cycle_of(store, proxy)
    await cycle.run()
    states = {s.session_sid: s for s in await store.sessions(SERVICE)}
    assert states[idle].baselined is False
    same_second = proxy.add(idle, "2026-11-01T09:00:00Z")  # the rule's one edge: baseline
    later = proxy.add(idle, "2026-12-01T00:00:01Z")  # ...until it shows activity
    polled_before = len(proxy.polled)
    second = await cycle.run()
    assert proxy.polled[polled_before] == idle  # first in the cycle
    assert second.reasons["activity"] == 1
    assert await notified(store) == [later.sid]
    assert same_second.sid in await store.known(idle)


async def test_a_session_listed_without_interactions_notifies_every_later_one(
    store: StateStore,
) -> None:
    proxy = FakeProxy()
    proxy.last[sid(1)] = None
    cycle = cycle_of(store, proxy, rate=None)
    proxy_first = proxy.add(sid(0), "2026-11-27T10:00:00Z")
    await cycle.plan()  # begins the watch: sid(1) listed with no date_last_interaction
    late = proxy.add(sid(1), "2026-11-27T10:00:05Z")
    await cycle.run()
    assert await notified(store) == [late.sid]
    assert proxy_first.sid in await store.known(sid(0))


async def test_a_polls_timeout_does_not_count_its_wait_behind_the_cycle(store: StateStore) -> None:
    # 30 polls of 10 ms each, one at a time: 0.3 s for the cycle, 0.15 s per poll allowed.
    proxy = FakeProxy(delay=0.01)
    for n in range(30):
        proxy.add(sid(n), "2026-11-27T10:00:00Z")
    cycle = cycle_of(store, proxy, rate=None, timeout=0.15, concurrency=1)
    with capture_logs() as logs:
        result = await cycle.run()
    assert (result.planned, result.ok, result.failed) == (30, 30, 0)
    assert [e for e in logs if e["log_level"] == "warning"] == []


async def test_poller_once_is_not_budgeted(store: StateStore) -> None:
    proxy = FakeProxy()
    for n in range(200):
        proxy.add(sid(n), "2026-11-27T10:00:00Z")
    result = await cycle_of(store, proxy).run(everything=True)
    assert result.planned == 200


async def test_the_watch_keeps_what_its_first_listing_showed_of_each_session(
    store: StateStore,
) -> None:
    listed = {sid(0): ("2026-11-27T10:00:00Z|x|open", "2026-11-27T10:00:00Z"), sid(1): ("||", None)}
    await store.begin_watch(SERVICE, [sid(0), sid(1), sid(2)], NOW, listed=listed)
    states = {s.session_sid: s for s in await store.sessions(SERVICE)}
    first, second, third = (states.get(sid(n)) for n in range(3))
    assert first is not None and second is not None and third is not None
    assert (first.watch_listed, first.watch_last_interaction) == (True, "2026-11-27T10:00:00Z")
    assert first.activity_marker == "2026-11-27T10:00:00Z|x|open" and not first.baselined
    assert (second.watch_listed, second.watch_last_interaction) == (True, None)
    assert (third.watch_listed, third.activity_marker) == (False, None)
    assert await store.baseline_counts(SERVICE) == (0, 3)
    assert await store.baseline_counts("KS" + "b" * 32) == (0, 0)


async def test_a_state_file_from_before_migration_2_keeps_its_sessions_unlisted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    open_database(path, schema.MIGRATIONS[:1]).close()
    conn = sqlite3.connect(path)
    with conn:  # what version 1 wrote when a watch began
        conn.execute(
            "INSERT INTO sessions (service_sid, session_sid, new_traffic, added_at) "
            "VALUES (?, ?, 0, ?)",
            (SERVICE, sid(0), NOW),
        )
    conn.close()
    async with SqliteStore.open(path) as store:
        state = {s.session_sid: s for s in await store.sessions()}.get(sid(0))
        assert (await store.summary()).schema_version == schema.latest_version()
    assert state is not None and (state.watch_listed, state.baselined) == (False, False)


async def test_a_cycle_of_a_service_not_owned_asks_twilio_nothing(store: StateStore) -> None:
    proxy = FakeProxy()
    proxy.add(sid(1), "2026-11-27T10:00:00Z")
    listed: list[str] = []
    real_list = proxy.list_sessions

    async def list_sessions(service_sid: str) -> list[Session]:
        listed.append(service_sid)
        return await real_list(service_sid)

    proxy.list_sessions = list_sessions  # type: ignore[method-assign]
    with pytest.raises(FencedError, match="no longer owns"):
        await cycle_of(store, proxy, owns=lambda _sid: False).run()
    assert (listed, proxy.polled) == ([], [])


async def test_a_lease_lapsing_mid_cycle_stops_it_before_the_next_request(
    store: StateStore,
) -> None:
    proxy = FakeProxy()
    for n in range(20):
        proxy.add(sid(n), "2026-11-27T10:00:00Z")
    # The replica stops trusting its lease (paused past it) once three polls were made.
    with pytest.raises(FencedError):
        await cycle_of(store, proxy, concurrency=1, owns=lambda _sid: len(proxy.polled) < 3).run()
    assert len(proxy.polled) == 3  # no request began after the lease lapsed
