"""A Slack sink's pacing is kept in the state, so the next process (cron's ``once``) honours it.

Each "run" is a new sink with a monotonic clock of its own (as a new process has); the fake
Slack and the state share the wall clock, which only moves when someone sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import pytest

from poller.errors import RetryableDeliveryError
from poller.sinks import PaceStore, build_sinks
from poller.sinks.slack import SlackSink
from poller.state.sqlite.store import SqliteStore
from tests.clock import FakeClock
from tests.fake_slack import FakeSlack
from tests.sink_contract_cases import MemoryThreads
from tests.sinks.test_slack import make_event, slack_config


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(wall=1_795_000_000.0)


@pytest.fixture
async def fake(wall: FakeClock) -> AsyncIterator[FakeSlack]:
    async with FakeSlack(clock=wall.time) as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "state.db") as opened:
        yield opened


def run_sink(
    fake: FakeSlack,
    store: SqliteStore,
    wall: FakeClock,
    origin: float,
    wall_seen: Callable[[], float] | None = None,
) -> SlackSink:
    """A sink as one run builds it; ``wall_seen``: the wall clock as this process reads it."""
    return SlackSink(
        slack_config(webhook_url=fake.webhook_url),
        store=MemoryThreads(),
        clock=wall.another_process(origin),  # a monotonic clock of its own origin
        sleep=wall.sleep,
        pace_store=store,
        wall=wall_seen or wall.time,
    )


async def test_the_next_run_waits_out_the_second_after_the_last_post(
    fake: FakeSlack, store: SqliteStore, wall: FakeClock
) -> None:
    async with aclosing(run_sink(fake, store, wall, origin=50.0)) as first:
        await first.send(make_event(n=1))
    wall.advance(0.3)  # cron starts the next `poller once` a moment later
    async with aclosing(run_sink(fake, store, wall, origin=7.0)) as second:
        await second.send(make_event(n=2))
    assert fake.rejected == []
    assert [post.at - fake.accepted[0].at for post in fake.accepted] == [0.0, 1.0]
    assert wall.slept == [pytest.approx(0.7)]


async def test_a_pause_slack_asked_for_holds_in_the_next_run(
    fake: FakeSlack, store: SqliteStore, wall: FakeClock
) -> None:
    fake.fail_webhook(429, "rate_limited", retry_after="30")
    async with aclosing(run_sink(fake, store, wall, origin=50.0)) as first:
        with pytest.raises(RetryableDeliveryError):
            await first.send(make_event(n=1))
    wall.advance(2.0)
    async with aclosing(run_sink(fake, store, wall, origin=0.0)) as second:
        with pytest.raises(RetryableDeliveryError, match="pause") as info:
            await second.send(make_event(n=1))
    assert info.value.retry_after == pytest.approx(28.0)
    assert len(fake.rejected) == 1 and fake.accepted == []  # the second run never called


async def test_a_wall_clock_stepping_back_never_stretches_the_wait(
    fake: FakeSlack, store: SqliteStore, wall: FakeClock
) -> None:
    async with aclosing(run_sink(fake, store, wall, origin=50.0)) as first:
        await first.send(make_event(n=1))
    # NTP stepped the clock back an hour (the fake Slack keeps true time).
    stepped_back = run_sink(fake, store, wall, origin=0.0, wall_seen=lambda: wall.time() - 3600.0)
    async with aclosing(stepped_back) as second:
        await second.send(make_event(n=2))
    assert wall.slept == [pytest.approx(1.0)]


async def test_sinks_built_from_the_config_keep_their_pacing_in_the_state(
    fake: FakeSlack, store: SqliteStore, wall: FakeClock
) -> None:
    assert isinstance(store, PaceStore)
    (sink,) = build_sinks([slack_config(webhook_url=fake.webhook_url)], store=store)
    async with aclosing(sink):
        await sink.send(make_event(n=1))
    kept = await store.sink_pace("support")
    assert kept is not None
    not_before, set_at = kept
    assert not_before - set_at == pytest.approx(1.0)


async def test_the_pace_survives_reopening_the_state(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore.open(path) as store:
        assert await store.sink_pace("chat") is None
        await store.set_sink_pace("chat", not_before=110.0, now=100.0)
        await store.set_sink_pace("chat", not_before=130.0, now=129.0)
    async with SqliteStore.open(path) as store:
        assert await store.sink_pace("chat") == (130.0, 129.0)
        assert await store.sink_pace("other") is None


class AwaitingPaceStore:
    """The state as a network database is: reading the kept pace awaits real I/O."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def sink_pace(self, sink: str) -> tuple[float, float] | None:
        for _ in range(3):
            await asyncio.sleep(0)  # the round trip: other posts run meanwhile
        return await self._store.sink_pace(sink)

    async def set_sink_pace(self, sink: str, *, not_before: float, now: float) -> None:
        await self._store.set_sink_pace(sink, not_before=not_before, now=now)


async def test_posts_starting_together_all_wait_for_the_kept_pace(
    fake: FakeSlack, store: SqliteStore, wall: FakeClock
) -> None:
    async with aclosing(run_sink(fake, store, wall, origin=50.0)) as first:
        await first.send(make_event(n=1))
    wall.advance(0.3)
    second = SlackSink(
        slack_config(webhook_url=fake.webhook_url),
        store=MemoryThreads(),
        clock=wall.another_process(7.0),
        sleep=wall.sleep,
        pace_store=AwaitingPaceStore(store),
        wall=wall.time,
    )
    async with aclosing(second):
        await asyncio.gather(second.send(make_event(n=2)), second.send(make_event(n=3)))
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(fake.accepted)]
    assert fake.rejected == [] and gaps == [pytest.approx(1.0), pytest.approx(1.0)]
