"""Several ``poller run`` replicas on one PostgreSQL database, against one simulator.

Every replica runs the same config file; what differs comes from its environment through
``${ENV}``: ``POLLER_REPLICA_ID`` (r1, r2, ...), ``SIM_URL`` (``twilio.base_url``: a port of the
simulator of the replica's own, a ``Doorway`` that notes every request as a ``Visit``) and
``HOOK_URL`` (the webhook sink's URL: the receiver's path names the replica that delivered).
The Twilio requests themselves carry nothing of the replica's. ``http.listen`` is
``127.0.0.1:0``: each replica picks its own port and logs it (``http_listening``).

The database is read directly (psycopg): the leases, the baselined sessions, and, when a
test installs it, an audit of every row written (a trigger noting the writer's
``application_name``, which names the replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web

from poller.lab.simulator import SimulatorThread
from poller.lab.simulator.server import SIMULATOR_KEY, Handler, add_twilio_routes, twilio_api
from tests.replica_checks import Visit
from tests.support import SECRET, DaemonProcess

SINK = "ops"


class Doorways:
    """One port per replica onto one simulator; every API request noted as a ``Visit``."""

    def __init__(self, sim: SimulatorThread) -> None:
        self.sim = sim
        self._lock = threading.Lock()
        self._visits: list[Visit] = []
        self._runners: list[web.AppRunner] = []
        # Visits are on the monotonic clock; this turns them into wall time, as logs have it.
        self.wall_offset = time.time() - time.monotonic()
        # Called with each Visit-to-be (its end not known yet) before the simulator answers.
        self.on_request: Callable[[Visit], None] | None = None

    def open(self, replica: str) -> str:
        """Listen for ``replica`` on a port of its own; return the base URL to give it."""
        return self.sim.submit(self._open(replica)).result(timeout=10)

    async def _open(self, replica: str) -> str:
        app = web.Application(middlewares=[self._noting(replica), twilio_api])
        app[SIMULATOR_KEY] = self.sim.simulator
        add_twilio_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        port = next(int(a[1]) for a in runner.addresses if isinstance(a, tuple))
        return f"http://127.0.0.1:{port}"

    def _noting(self, replica: str) -> Any:
        @web.middleware
        async def note(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.monotonic()
            service = request.match_info.get("service")
            hook = self.on_request
            if service and hook is not None:
                hook(Visit(replica, service, request.match_info.route.name or "", started, 0.0))
            try:
                return await handler(request)
            finally:
                service = request.match_info.get("service")
                if service:
                    route = request.match_info.route.name or "other"
                    visit = Visit(replica, service, route, started, time.monotonic())
                    with self._lock:
                        self._visits.append(visit)

        return note

    def visits(self) -> list[Visit]:
        with self._lock:
            return list(self._visits)

    def close(self) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        with contextlib.suppress(RuntimeError):  # the simulator already stopped
            self.sim.submit(cleanup()).result(timeout=10)


def replica_config(
    folder: Path,
    sim: SimulatorThread,
    url: str,
    *,
    lease_seconds: float = 3,
    interval: float = 1,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """The one config every replica runs (``${SIM_URL}``, ``${HOOK_URL}`` from each one's env)."""
    simulator = sim.simulator
    config: dict[str, Any] = {
        "twilio": {
            "account_sid": simulator.account_sid,
            "auth_token": simulator.auth_token,
            "base_url": "${SIM_URL}",
            "page_size": 50,
            "max_requests_per_second": 25,
            "timeout_seconds": 3,
            "retry_deadline_seconds": 5,
        },
        "state": {"url": url, "lease_seconds": lease_seconds},
        "poll": {"interval_seconds": interval, "first_run": "baseline"},
        "delivery": {
            "max_attempts": 10_000,
            "initial_backoff_seconds": 0.2,
            "max_backoff_seconds": 2,
            "shutdown_timeout_seconds": 5,
        },
        "watch": [{"service_sid": sid, "all_sessions": True} for sid in simulator.service_sids()],
        "sinks": [
            {
                "name": SINK,
                "type": "webhook",
                "url": "${HOOK_URL}",
                "secret": SECRET,
                "timeout_seconds": 5,
            }
        ],
        "http": {"listen": "127.0.0.1:0"},
        "log": {"format": "json", "level": "info"},
    }
    for key, value in (sections or {}).items():
        config[key] = {**config.get(key, {}), **value}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Replica(DaemonProcess):
    """One replica: ``poller run`` with its id, its doorway and its hook path."""

    def __init__(self, name: str, config: Path, folder: Path, sim_url: str, hook_url: str):
        folder.mkdir(parents=True, exist_ok=True)
        env = {"POLLER_REPLICA_ID": name, "SIM_URL": sim_url, "HOOK_URL": hook_url}
        super().__init__(config, folder, env)
        self.name = name

    def all_log_events(self) -> Iterator[dict[str, Any]]:
        """The JSON lines of every start of this replica, oldest start first."""
        for path in sorted(self.folder.glob("daemon-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    item = json.loads(line)
                    if isinstance(item, dict):
                        yield item

    def logged(self, event: str, *, current: bool = True, **fields: object) -> list[dict[str, Any]]:
        """The lines of ``event`` whose fields match (this start only, unless not ``current``)."""
        lines = self.log_events() if current else self.all_log_events()
        return [
            item
            for item in lines
            if item.get("event") == event and all(item.get(k) == v for k, v in fields.items())
        ]

    def readyz(self) -> int | None:
        """The status of /readyz now (None: no answer)."""
        port = self.health_port()
        if port is None:
            return None
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)


class Replicas:
    """``r1`` .. ``rN`` on one config; each reaches the simulator through its own doorway."""

    def __init__(self, config: Path, folder: Path, doorways: Doorways, hooks: str, n: int):
        self.by_name: dict[str, Replica] = {}
        for i in range(1, n + 1):
            name = f"r{i}"
            self.by_name[name] = Replica(
                name, config, folder / name, doorways.open(name), f"{hooks}/hooks/{name}"
            )

    def __getitem__(self, name: str) -> Replica:
        return self.by_name[name]

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.by_name.values())

    def start_all(self) -> None:
        for replica in self:
            replica.start()

    def running(self) -> list[Replica]:
        return [r for r in self if r.running()]

    def close(self) -> None:
        """SIGKILL whatever still runs (a paused one too) and reap it."""
        for replica in self:
            replica.kill()


class Freeze:
    """SIGSTOP a replica from the simulator's thread the moment it asks for a Service.

    Armed by the test, fired by the replica's own request (``Doorways.on_request``), so the
    replica is paused with that request in flight: when it wakes it holds an answer fetched
    under the lease it had, and whatever it does with it is what fencing must refuse.
    """

    def __init__(self, doorways: Doorways) -> None:
        self._lock = threading.Lock()
        self._armed: tuple[Replica, str, str] | None = None
        self.fired = threading.Event()
        doorways.on_request = self._hook

    def arm(self, replica: Replica, service_sid: str, route: str = "interactions") -> None:
        with self._lock:
            self._armed = (replica, service_sid, route)
            self.fired.clear()

    def _hook(self, visit: Visit) -> None:
        with self._lock:
            if self._armed is None:
                return
            replica, service, route = self._armed
            if (visit.replica, visit.service_sid, visit.route) != (replica.name, service, route):
                return
            replica.pause()
            self._armed = None
            self.fired.set()


# -- the database, read directly --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    owner: str | None
    epoch: int
    live: bool  # owned and not expired by the database's clock


def migrate(url: str) -> None:
    """Apply the schema (as a replica's start would), so a test can add to it first."""
    from poller.state.postgres import schema
    from poller.state.postgres.db import Settings, connect

    async def run() -> None:
        conn = await connect(Settings(url))
        try:
            await schema.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())


def query(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return list(conn.execute(sql, params).fetchall())


def leases(url: str) -> dict[str, Lease]:
    rows = query(
        url,
        "SELECT service_sid, owner, epoch, owner IS NOT NULL AND expires_at > now() FROM leases",
    )
    return {sid: Lease(owner, int(epoch), bool(live)) for sid, owner, epoch, live in rows}


def owners(url: str) -> dict[str, str]:
    """Service -> its live owner (Services without one left out)."""
    return {sid: lease.owner for sid, lease in leases(url).items() if lease.live and lease.owner}


def baselined(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM sessions WHERE baselined")[0][0])


def pending(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM deliveries WHERE state = 'pending'")[0][0])


_AUDITED = ("sessions", "interactions", "session_fingerprints", "events", "deliveries")
# Each row written, by whom (the connection's application_name), and who held the lease of
# its Service at that moment: inside the writer's transaction, after the fence locked the
# lease row, so the lease cannot change before the row is committed.
_AUDIT = """
CREATE TABLE test_audit (
    id bigserial PRIMARY KEY,
    app text NOT NULL,
    tbl text NOT NULL,
    op text NOT NULL,
    session_sid text,
    service_sid text,
    lease_owner text,
    lease_epoch bigint
);
CREATE FUNCTION test_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    service text := r->>'service_sid';
    who text;
    held bigint;
BEGIN
    IF service IS NULL THEN
        SELECT s.service_sid INTO service FROM sessions s WHERE s.session_sid = r->>'session_sid';
    END IF;
    SELECT l.owner, l.epoch INTO who, held FROM leases l WHERE l.service_sid = service;
    INSERT INTO test_audit (app, tbl, op, session_sid, service_sid, lease_owner, lease_epoch)
    VALUES (current_setting('application_name'), TG_TABLE_NAME, TG_OP, r->>'session_sid',
            service, who, held);
    RETURN NULL;
END $$;
"""


@dataclass(frozen=True, slots=True)
class Written:
    """One row written: by whom (``application_name``), and who held its Service's lease."""

    id: int
    app: str
    table: str
    op: str
    session_sid: str | None
    service_sid: str | None
    lease_owner: str | None
    lease_epoch: int | None

    def by(self, replica: str) -> bool:
        """Whether ``replica`` wrote it (its id is a word of the application_name)."""
        pattern = rf"(?<![A-Za-z0-9]){re.escape(replica)}(?![A-Za-z0-9])"
        return re.search(pattern, self.app) is not None


def install_audit(url: str) -> None:
    """Note every row written to the session and outbox tables (after ``migrate``)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_AUDIT)
        for table in _AUDITED:
            conn.execute(
                f"CREATE TRIGGER audit_{table} AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION test_audit()"
            )


def written(url: str, after: int = 0) -> list[Written]:
    rows = query(
        url,
        "SELECT id, app, tbl, op, session_sid, service_sid, lease_owner, lease_epoch "
        "FROM test_audit WHERE id > %s ORDER BY id",
        (after,),
    )
    return [Written(*row) for row in rows]


def audit_mark(url: str) -> int:
    return int(query(url, "SELECT coalesce(max(id), 0) FROM test_audit")[0][0])


def unowned_writes(url: str, replicas: list[str]) -> list[Written]:
    """Rows a replica wrote for a Service whose lease another held (or nobody) at the time."""
    found = []
    for row in written(url):
        if row.service_sid is None:
            continue
        writer = [name for name in replicas if row.by(name)]
        if writer and row.lease_owner != writer[0]:
            found.append(row)
    return found
