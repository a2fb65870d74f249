"""The daemon asks its ownership: what it polls, when a gained Service is polled, the stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from structlog.testing import capture_logs

from poller.app import App, build_app
from poller.config import Config, parse_config
from poller.daemon import Daemon
from poller.delivery.dispatcher import Dispatcher
from poller.delivery.policy import DeliveryPolicy
from poller.errors import ConfigError, FencedError, StateUnavailableError
from poller.events import Event
from poller.observe.health import HealthServer
from poller.observe.sdnotify import Notifier
from poller.state.base import StateStore
from poller.state.sqlite.store import SqliteStore
from tests.fake_ownership import FakeOwnership
from tests.sink_contract_cases import make_event
from tests.test_daemon_unit import _run_failing_cycle

SERVICE = "KS" + "a" * 32  # make_event's Service
OTHER = "KS" + "b" * 32


def _config(**sections: Any) -> Config:
    return parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
            "watch": [
                {"service_sid": SERVICE, "all_sessions": True},
                {"service_sid": OTHER, "all_sessions": True},
            ],
            "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
            **sections,
        },
        {},
    )


def _no_reload() -> Config:
    raise ConfigError("this test reloads nothing")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with SqliteStore.open(tmp_path / "state.db") as opened:
        yield opened


class Twilio:
    """A Proxy API whose every list is empty, recording which Services were asked."""

    def __init__(self) -> None:
        self.services: list[str] = []
        self.asked = asyncio.Event()

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.services.append(request.url.path.split("/")[3])
        self.asked.set()
        key = request.url.path.rsplit("/", 1)[1].lower()  # sessions, interactions
        return httpx.Response(200, json={key: [], "meta": {"key": key}})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


async def test_a_cycle_of_a_service_not_owned_makes_no_twilio_request(store: StateStore) -> None:
    twilio = Twilio()
    ownership = FakeOwnership(owned=[OTHER])
    config = _config()
    daemon = Daemon(config, store, build=build_app, reload=_no_reload, ownership=ownership)
    app = await build_app(config, store, twilio_transport=twilio.transport())
    try:
        with capture_logs(processors=[]) as logs:
            for cycle in app.cycles:
                await daemon._cycle_job(cycle, app)
    finally:
        await app.client.aclose()
    assert twilio.services == [OTHER]
    skipped = [e for e in logs if e["event"] == "cycle_not_owned"]
    assert [(e["service_sid"], e["replica"]) for e in skipped] == [(SERVICE, "replica-a")]


async def test_gaining_a_service_makes_its_cycle_due_now_and_wakes_the_dispatcher(
    store: StateStore,
) -> None:
    ownership = FakeOwnership()
    config = _config()
    daemon = Daemon(config, store, build=build_app, reload=_no_reload, ownership=ownership)
    app = await build_app(config, store)
    scheduler = AsyncIOScheduler()
    in_an_hour = datetime.now().astimezone() + timedelta(hours=1)
    for sid in (SERVICE, OTHER):

        async def noop() -> None:
            return None

        scheduler.add_job(noop, IntervalTrigger(seconds=3600), id=f"cycle:{sid}")
        scheduler.get_job(f"cycle:{sid}").modify(next_run_time=in_an_hour)
    scheduler.start(paused=True)  # nothing runs; the test reads the schedule
    daemon._scheduler, daemon._app = scheduler, app
    try:
        await ownership.start([SERVICE, OTHER], daemon._ownership_changed)
        ownership.gain(OTHER)
        gained, other = scheduler.get_job(f"cycle:{OTHER}"), scheduler.get_job(f"cycle:{SERVICE}")
    finally:
        scheduler.shutdown(wait=False)
        await app.client.aclose()
    assert gained.next_run_time <= datetime.now().astimezone()
    assert other.next_run_time == in_an_hour
    assert app.wake.is_set()


async def test_a_fenced_cycle_is_cycle_fenced_and_leaves_the_health_alone(
    store: StateStore,
) -> None:
    daemon = Daemon(_config(), store, build=build_app, reload=_no_reload)
    lost = FencedError("replica a no longer holds the lease", service_sids=(SERVICE,))
    with capture_logs() as logs:
        await _run_failing_cycle(daemon, lost)
    assert [(e["event"], e["log_level"]) for e in logs] == [("cycle_fenced", "warning")]
    assert logs[0]["service_sid"] == "KS" + "1" * 32  # the stand-in cycle's Service
    assert daemon.health.ready()[1]["checks"]["poll"]["consecutive_failures"] == 0
    assert not daemon.stop.is_set()


async def test_a_database_down_is_said_once_per_interval_not_once_per_cycle(
    store: StateStore,
) -> None:
    daemon = Daemon(_config(), store, build=build_app, reload=_no_reload)
    down = StateUnavailableError("state database 127.0.0.1:5432 does not answer")
    with capture_logs() as logs:
        for _ in range(5):
            await _run_failing_cycle(daemon, down)
    assert [e["event"] for e in logs] == ["state_unavailable"]
    assert logs[0]["error"] == str(down) and logs[0]["log_level"] == "error"
    assert daemon.health.ready()[1]["checks"]["poll"]["consecutive_failures"] == 5


async def test_readyz_follows_whether_the_ownership_reaches_the_database(
    store: StateStore,
) -> None:
    ownership = FakeOwnership(owned=[], reachable=True)
    daemon = Daemon(_config(), store, build=build_app, reload=_no_reload, ownership=ownership)
    server = HealthServer("127.0.0.1", 0, health=daemon.health)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            await daemon.watch_once(store)
            standby = await http.get("/readyz")
            ownership.is_reachable = False
            await daemon.watch_once(store)
            cut_off = await http.get("/readyz")
            ownership.is_reachable = True
            await daemon.watch_once(store)
            back = await http.get("/readyz")
            alive = await http.get("/healthz")
    finally:
        await server.stop()
    assert standby.status_code == 200  # owning nothing, never polled: a standby is ready
    assert standby.json()["status"] == "standby"
    assert cut_off.status_code == 503
    assert cut_off.json()["failed"] == ["state"]
    assert cut_off.json()["checks"]["state"] == {
        "ok": False,
        "reason": "the state's database does not answer",
    }
    assert back.status_code == 200
    assert alive.status_code == 200  # liveness never asks the database


async def test_an_owner_that_never_polled_is_not_ready(store: StateStore) -> None:
    ownership = FakeOwnership(owned=[SERVICE])
    daemon = Daemon(_config(), store, build=build_app, reload=_no_reload, ownership=ownership)
    await daemon.watch_once(store)
    ready, body = daemon.health.ready()
    assert not ready and body["status"] == "starting" and body["failed"] == ["poll"]


def test_a_reload_cannot_move_the_database() -> None:
    url = "postgresql://poller:pw@127.0.0.1:5432/"
    old = _config(state={"url": url + "one"})
    moved = _config(state={"url": url + "two"})
    daemon = Daemon(old, SqliteStore.__new__(SqliteStore), build=build_app, reload=lambda: moved)
    with capture_logs() as logs:
        daemon._on_reload()
    assert daemon.config is old and not daemon._reload.is_set()
    assert [e["error"] for e in logs] == ["state.url cannot change without a restart"]


# -- the whole run: gain, reload, SIGTERM ---------------------------------------------------


class HeldSink:
    """A webhook stand-in named ``ops`` whose sends wait until the test lets them through."""

    name = "ops"
    include_data = True
    digest_threshold = None

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.sending = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, event: Event) -> None:
        self.order.append("send")
        self.sending.set()
        await self.release.wait()
        self.order.append("sent")

    async def send_digest(self, events: Any) -> None:
        raise AssertionError("no digest here")

    async def aclose(self) -> None:
        return None


async def _enqueue(store: StateStore, event: Event) -> None:
    await store.commit_poll(
        event.service_sid, event.session_sid, fetched={}, events=[(event, ["ops"])], now=1.0
    )


async def test_sigterm_releases_the_leases_after_the_drain(store: StateStore) -> None:
    order: list[str] = []
    at_stop: list[int] = []

    async def look() -> None:
        order.append("stop")
        at_stop.append(await store.pending_count())

    ownership = FakeOwnership(owned=[SERVICE], on_stop=look)
    sink = HeldSink(order)
    twilio = Twilio()
    config = _config(poll={"interval_seconds": 3600})

    async def build(config: Config, store: StateStore) -> App:
        app = await build_app(config, store, twilio_transport=twilio.transport())
        policy = DeliveryPolicy(config.delivery)
        app.sinks = [sink]  # type: ignore[list-item]
        app.dispatcher = Dispatcher(store, [sink], policy, owns=ownership.owns)  # type: ignore[list-item]
        return app

    await _enqueue(store, make_event())
    daemon = Daemon(config, store, build=build, reload=_no_reload, ownership=ownership)
    run = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10):
        await sink.sending.wait()
    signal.raise_signal(signal.SIGTERM)  # the daemon's own handler: a real stop request
    async with asyncio.timeout(10):
        await daemon.stop.wait()
    sink.release.set()
    async with asyncio.timeout(10):
        assert await run == 0
    assert order == ["send", "sent", "stop"]
    assert at_stop == [0]  # acked before the leases went
    assert ownership.calls == [("start", [SERVICE, OTHER]), ("stop",)]
    assert set(twilio.services) == {SERVICE}  # OTHER is another replica's


class Ready(Notifier):
    """systemd's socket stand-in: at READY=1, hear when the job ``job_id`` has run."""

    def __init__(self, job_id: str) -> None:
        super().__init__(None)
        self.job_id = job_id
        self.daemon: Daemon | None = None
        self.ran = asyncio.Event()

    def notify(self, message: str) -> bool:
        scheduler = None if self.daemon is None else self.daemon._scheduler
        if message == "READY=1" and scheduler is not None:
            # Before any job ran: the scheduler runs them in a later turn of the loop.
            scheduler.add_listener(self._executed, EVENT_JOB_EXECUTED)
        return super().notify(message)

    def _executed(self, event: JobExecutionEvent) -> None:
        if event.job_id == self.job_id:
            self.ran.set()


async def test_a_service_gained_is_polled_at_once_and_a_reload_sets_the_services(
    store: StateStore,
) -> None:
    ownership = FakeOwnership()
    twilio = Twilio()
    fewer = _config(
        poll={"interval_seconds": 3600},
        watch=[{"service_sid": OTHER, "all_sessions": True}],
    )
    config = _config(poll={"interval_seconds": 3600})

    async def build(config: Config, store: StateStore) -> App:
        return await build_app(config, store, twilio_transport=twilio.transport())

    ready = Ready(f"cycle:{OTHER}")
    daemon = Daemon(
        config, store, build=build, reload=lambda: fewer, notifier=ready, ownership=ownership
    )
    ready.daemon = daemon
    run = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(10):
            await ready.ran.wait()  # its first run, owned by no one
        assert twilio.services == []
        ownership.gain(OTHER)  # an hour before its next run
        async with asyncio.timeout(10):
            await twilio.asked.wait()
        assert twilio.services == [OTHER]
        daemon._on_reload()
        async with asyncio.timeout(10):
            await ownership.services_set.wait()
        assert ("set_services", [OTHER]) in ownership.calls
    finally:
        daemon.stop.set()
        async with asyncio.timeout(10):
            await run
    assert ownership.calls[-1] == ("stop",)
