"""Clock steps, with injected clocks: detection, health ages, jobs and stored due times."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from structlog.testing import capture_logs

from poller.app import build_app
from poller.config import Config, parse_config
from poller.daemon import Daemon
from poller.errors import ConfigError
from poller.observe.health import HealthState
from poller.observe.metrics import REGISTRY
from poller.state.sqlite.store import SqliteStore
from poller.watch.clockwatch import ClockWatch
from tests.clock import FakeClock
from tests.delivery.test_delivery import SERVICE, enqueue, session
from tests.sink_contract_cases import make_event

T0 = 1_795_000_000.0


@pytest.fixture
def clocks() -> FakeClock:
    """A wall clock and a monotonic clock that move together until the wall one steps."""
    return FakeClock(wall=T0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "state.db") as opened:
        yield opened


def test_clocks_moving_together_are_no_step(clocks: FakeClock) -> None:
    watch = ClockWatch(wall=clocks.time, monotonic=clocks.monotonic)
    for _ in range(10):
        clocks.advance(5.0)
        assert watch.check() is None


def test_a_step_back_is_reported_once_with_its_size(clocks: FakeClock) -> None:
    watch = ClockWatch(wall=clocks.time, monotonic=clocks.monotonic)
    clocks.advance(3.0)
    clocks.step(-3600.0)
    clocks.advance(2.0)
    assert watch.check() == pytest.approx(-3600.0)
    clocks.advance(5.0)
    assert watch.check() is None


def test_a_step_forward_is_reported_with_its_size(clocks: FakeClock) -> None:
    watch = ClockWatch(wall=clocks.time, monotonic=clocks.monotonic)
    clocks.step(7200.0)
    assert watch.check() == pytest.approx(7200.0)


def test_slewing_under_the_threshold_never_adds_up_to_a_step(clocks: FakeClock) -> None:
    watch = ClockWatch(wall=clocks.time, monotonic=clocks.monotonic)
    for _ in range(10_000):  # 0.5 ms/s of NTP slewing for 14 hours: 25 s in all
        clocks.advance(5.0)
        clocks.step(0.0025)
        assert watch.check() is None


def test_health_ages_ignore_a_wall_clock_step(clocks: FakeClock) -> None:
    health = HealthState(
        clock=clocks.monotonic,
        wall_clock=clocks.time,
        liveness_timeout=120.0,
        max_outbox_age=3600.0,
    )
    health.poll_succeeded()
    health.set_outbox_oldest(clocks.time() - 60.0)
    clocks.step(7200.0)  # forward: before, the heartbeat looked two hours old
    clocks.advance(1.0)
    alive, body = health.alive()
    assert alive and body["heartbeat_age_seconds"] == 1.0
    ready, body = health.ready()
    assert ready and body["checks"]["outbox"]["oldest_pending_age_seconds"] == 61.0
    clocks.step(-3600.0 - 7200.0)  # back an hour from where it started
    alive, body = health.alive()
    assert alive and body["heartbeat_age_seconds"] == 1.0  # never negative
    assert health.ready()[0]


def test_state_lost_makes_readiness_fail_naming_the_reason(clocks: FakeClock) -> None:
    health = HealthState(clock=clocks.monotonic, wall_clock=clocks.time)
    health.poll_succeeded()
    health.state_lost("the file was removed")
    ready, body = health.ready()
    assert not ready
    assert body["failed"] == ["state"]
    assert body["checks"]["state"] == {"ok": False, "lost": "the file was removed"}


def _no_reload() -> Config:
    raise ConfigError("this test reloads nothing")


def _daemon(tmp_path: Path, clocks: FakeClock, store: SqliteStore) -> Daemon:
    config = parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
            "state": {"path": str(tmp_path / "state.db")},
            "watch": [{"service_sid": SERVICE, "all_sessions": True}],
            "sinks": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        },
        {},
    )
    daemon = Daemon(config, store, build=build_app, reload=_no_reload)
    daemon.clock_watch = ClockWatch(wall=clocks.time, monotonic=clocks.monotonic)
    return daemon


def _steps() -> float:
    value = REGISTRY.get_sample_value("poller_clock_steps_total")
    return 0.0 if value is None else value


async def _noop() -> None:
    return None


async def test_a_step_back_makes_every_job_due_now_and_shifts_stored_due_times(
    tmp_path: Path, clocks: FakeClock, store: SqliteStore
) -> None:
    event = make_event(session_sid=session(1))
    await enqueue(store, [event], ["hook"], T0)
    (row,) = await store.due("hook", None, 10)
    await store.retry_later(row.id, next_attempt_at=T0 + 30.0, error="HTTP 503", status=503)
    daemon = _daemon(tmp_path, clocks, store)
    scheduler = AsyncIOScheduler()
    in_an_hour = datetime.now().astimezone() + timedelta(hours=1)
    job = scheduler.add_job(_noop, IntervalTrigger(seconds=30), next_run_time=in_an_hour)
    scheduler.start(paused=True)  # nothing runs; the test reads the schedule
    daemon._scheduler = scheduler
    before = _steps()
    try:
        clocks.advance(10.0)
        clocks.step(-3600.0)
        with capture_logs() as logs:
            await daemon.watch_once(store)
        assert job.next_run_time is not None
        assert job.next_run_time <= datetime.now().astimezone()
    finally:
        scheduler.shutdown(wait=False)
    (stepped,) = [e for e in logs if e["event"] == "clock_stepped"]
    assert stepped["step_seconds"] == -3600.0
    assert stepped["deliveries_shifted"] == 1 and stepped["jobs_rescheduled"] == 1
    assert _steps() == before + 1
    # The retry still waits its last 20 s, in the new clock's terms (not 3620 s).
    assert await store.due("hook", clocks.time() + 19.9, 10) == []
    (due,) = await store.due("hook", clocks.time() + 20.0, 10)
    assert due.enqueued_at == T0 - 3600.0


async def test_no_step_changes_nothing(
    tmp_path: Path, clocks: FakeClock, store: SqliteStore
) -> None:
    await enqueue(store, [make_event(session_sid=session(1))], ["hook"], T0)
    daemon = _daemon(tmp_path, clocks, store)
    clocks.advance(5.0)
    with capture_logs() as logs:
        await daemon.watch_once(store)
    assert [e for e in logs if e["event"] == "clock_stepped"] == []
    (row,) = await store.due("hook", None, 10)
    assert row.next_attempt_at == T0 and row.enqueued_at == T0


def _age(daemon: Daemon) -> Any:
    return daemon.health.ready()[1]["checks"]["outbox"]["oldest_pending_age_seconds"]


async def test_a_step_forward_leaves_the_outbox_age_as_it_was(
    tmp_path: Path, clocks: FakeClock, store: SqliteStore
) -> None:
    await enqueue(store, [make_event(session_sid=session(1))], ["hook"], clocks.time())
    daemon = _daemon(tmp_path, clocks, store)
    daemon.health = HealthState(clock=clocks.monotonic, wall_clock=clocks.time)
    clocks.advance(30.0)
    await daemon.watch_once(store)
    assert _age(daemon) == 30.0
    clocks.step(2 * 86400.0)  # a VM resumed after two days
    await daemon.watch_once(store)
    assert _age(daemon) == 30.0
    assert daemon.health.ready()[1]["checks"]["outbox"]["ok"]
