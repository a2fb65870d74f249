"""Liveness and readiness of the daemon, served with the metrics over HTTP.

``HealthState`` is a plain object the daemon updates (heartbeat, poll outcomes, outbox age);
``HealthServer`` answers ``/healthz``, ``/readyz`` and ``/metrics`` from it on aiohttp, and,
given a ``StatusSource``, the status page (``poller.observe.status_http``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from poller.observe.metrics import REGISTRY

if TYPE_CHECKING:
    from poller.config.http import HttpAuthConfig
    from poller.observe.status import StatusSource

log = structlog.get_logger(__name__)

Clock = Callable[[], float]


class HealthState:
    """What the probes report; every age is measured on ``clock``, a monotonic clock.

    Alive: the scheduler's heartbeat is at most ``liveness_timeout`` old (the construction
    counts as the first heartbeat). Ready: a poll succeeded at most ``ready_max_poll_age`` ago
    (or the replica owns no Service: a standby), the oldest pending delivery is at most
    ``max_outbox_age`` old, and the state is still the file the daemon opened, or a database
    that answers. A step of the wall clock moves no age: only the outbox's
    enqueue time is a wall time (``wall_clock``), turned into an age when it is recorded.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        liveness_timeout: float = 120.0,
        ready_max_poll_age: float = 150.0,
        max_outbox_age: float = 3600.0,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self.liveness_timeout = liveness_timeout
        self.ready_max_poll_age = ready_max_poll_age
        self.max_outbox_age = max_outbox_age
        self._last_heartbeat = clock()
        self._last_success: float | None = None
        self._last_failure: float | None = None
        self._consecutive_failures = 0
        self._outbox_oldest: float | None = None
        self._state_lost: str | None = None
        self._reachable = True
        self._standby = False
        # Set by the first poll cycle that succeeded: what ``poller demo`` waits for.
        self.first_success = asyncio.Event()

    @classmethod
    def for_interval(
        cls,
        interval_seconds: float,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> HealthState:
        """Build a state whose readiness tolerates two missed polls of ``interval_seconds``."""
        return cls(
            clock=clock, wall_clock=wall_clock, ready_max_poll_age=3 * interval_seconds + 60.0
        )

    def heartbeat(self) -> None:
        """Record that the scheduler is running jobs."""
        self._last_heartbeat = self._clock()

    def poll_succeeded(self) -> None:
        """Record a poll cycle that succeeded."""
        self._last_success = self._clock()
        self.first_success.set()
        self._consecutive_failures = 0

    def poll_failed(self) -> None:
        """Record a poll cycle that failed."""
        self._last_failure = self._clock()
        self._consecutive_failures += 1

    def set_outbox_oldest(self, enqueued_at: float | None) -> None:
        """Record when (Unix time) the oldest pending delivery was enqueued (None: empty).

        Kept as the ``clock`` time it corresponds to, so that its age goes on growing at the
        monotonic clock's pace until the next call, whatever the wall clock does meanwhile.
        """
        if enqueued_at is None:
            self._outbox_oldest = None
            return
        age = max(0.0, self._wall_clock() - enqueued_at)
        self._outbox_oldest = self._clock() - age

    def state_lost(self, reason: str) -> None:
        """Record that the state file vanished or was replaced: never ready again."""
        self._state_lost = reason

    def set_ownership(self, *, reachable: bool, owning: bool) -> None:
        """Record whether the shared state answers, and whether this replica owns a Service.

        A replica that owns nothing is a standby: ready without polling (while it can reach
        the database, to take over). A poller alone on its state always owns everything.
        """
        self._reachable = reachable
        self._standby = not owning

    def alive(self) -> tuple[bool, dict[str, Any]]:
        """Tell whether the heartbeat is recent, with the JSON body for ``/healthz``."""
        age = self._clock() - self._last_heartbeat
        ok = age <= self.liveness_timeout
        return ok, {
            "status": "ok" if ok else "stale",
            "heartbeat_age_seconds": round(age, 3),
            "liveness_timeout_seconds": self.liveness_timeout,
        }

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Tell whether polls succeed and the outbox drains, with the body for ``/readyz``."""
        now = self._clock()
        poll_age = None if self._last_success is None else now - self._last_success
        outbox_age = None if self._outbox_oldest is None else max(0.0, now - self._outbox_oldest)
        polled = poll_age is not None and poll_age <= self.ready_max_poll_age
        checks: dict[str, dict[str, object]] = {
            "poll": {
                "ok": polled or self._standby,
                "last_success_age_seconds": _rounded(poll_age),
                "max_age_seconds": self.ready_max_poll_age,
                "consecutive_failures": self._consecutive_failures,
            },
            "outbox": {
                "ok": outbox_age is None or outbox_age <= self.max_outbox_age,
                "oldest_pending_age_seconds": _rounded(outbox_age),
                "max_age_seconds": self.max_outbox_age,
            },
        }
        if self._standby:
            checks["poll"]["standby"] = True  # another replica owns every Service
        if self._state_lost is not None:
            checks["state"] = {"ok": False, "lost": self._state_lost}
        elif not self._reachable:
            checks["state"] = {"ok": False, "reason": "the state's database does not answer"}
        failed = [name for name, check in checks.items() if not check["ok"]]
        status = "unavailable" if failed else "ok"
        if self._standby and not failed:
            status = "standby"
        elif self._last_success is None and not self._standby:
            status = "starting"
        return not failed, {"status": status, "failed": failed, "checks": checks}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``listen_host:listen_port`` (0: any port).

    ``status``: also serve the status page and ``/api/status``, behind ``auth`` when given
    (the probes and the metrics stay open).
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        *,
        health: HealthState,
        registry: CollectorRegistry = REGISTRY,
        status: StatusSource | None = None,
        auth: HttpAuthConfig | None = None,
    ) -> None:
        self._status = status
        self._auth = auth
        self._host = listen_host
        self._requested_port = listen_port
        self._health = health
        self._registry = registry
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound; only known once started."""
        if self._port is None:
            raise RuntimeError("HealthServer.port: the server is not started")
        return self._port

    async def start(self) -> None:
        """Bind and serve; raises ``OSError`` when the address is taken."""
        if self._runner is not None:
            raise RuntimeError("HealthServer.start: the server is already started")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self._status is not None:
            from poller.observe.status_http import add_status_routes

            add_status_routes(app, self._status, self._auth)
        # No access log: probes every few seconds would drown the useful lines.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._requested_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("health_server_started", host=self._host, port=self._port)

    async def stop(self) -> None:
        """Stop serving; a no-op when not started."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._port = None
        await runner.cleanup()
        log.info("health_server_stopped")

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _healthz(self, _request: web.Request) -> web.Response:
        # Answering at all proves the event loop runs; the heartbeat proves the scheduler does.
        ok, body = self._health.alive()
        return _json(body, ok)

    async def _readyz(self, _request: web.Request) -> web.Response:
        ok, body = self._health.ready()
        return _json(body, ok)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
        )


def _json(body: dict[str, Any], ok: bool) -> web.Response:
    return web.json_response(body, status=200 if ok else 503, headers={"Cache-Control": "no-store"})
