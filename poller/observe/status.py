"""What the status page and ``/api/status`` show: one ``StatusSnapshot``, gathered from the state.

Gathered on each request from cheap reads only (counts, the oldest pending row per sink, the
latest attempts of each sink, the leases): no query walks every session, event or interaction,
so the page answers in milliseconds whatever the state holds (``bench/bench_status.py``).

A sink is shown by its name and type only: its URL, secret, token or address never leave the
config. Attempts carry an error class (``HTTP 503``, ``ReadTimeout``), never a body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from poller import __version__
from poller.config import Config
from poller.observe.cycles import CycleLog, CycleRecord
from poller.replicas.open import watched_services
from poller.state.base import StateStore
from poller.state.models import DisabledSink, FailingSink, Lease
from poller.state.views import AttemptRecord

RECENT_ATTEMPTS = 50


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One watched Service: its latest cycle here (None: none yet) and its sessions."""

    service_sid: str
    cycle: CycleRecord | None
    sessions: int  # watched (not gone) sessions
    baselined: int
    baseline_left: int

    def to_json(self) -> dict[str, object]:
        return {
            "service_sid": self.service_sid,
            "last_cycle": None if self.cycle is None else self.cycle.to_json(),
            "sessions": self.sessions,
            "baseline": {"done": self.baselined, "left": self.baseline_left},
        }


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """One configured sink: its outbox, its disabled state and its latest attempts."""

    name: str
    type: str
    pending: int
    oldest_pending_age_seconds: float | None
    dead: int
    disabled: DisabledSink | None
    failing: FailingSink | None  # its pending rows that failed and wait for a retry
    attempts: tuple[AttemptRecord, ...]  # the newest first

    def to_json(self) -> dict[str, object]:
        disabled = self.disabled
        return {
            "name": self.name,
            "type": self.type,
            "pending": self.pending,
            "oldest_pending_age_seconds": self.oldest_pending_age_seconds,
            "dead_letters": self.dead,
            "disabled": None
            if disabled is None
            else {"since": disabled.since, "status": disabled.status, "reason": disabled.reason},
            "retrying": None if self.failing is None else _failing_json(self.failing),
            "recent_attempts": [attempt.to_json() for attempt in self.attempts],
        }


def _failing_json(failing: FailingSink) -> dict[str, object]:
    return {
        "deliveries": failing.deliveries,
        "attempts": failing.attempts,
        "next_attempt_at": failing.next_attempt_at,
        "last_status": failing.last_status,
        "last_error": failing.last_error,
    }


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """Everything the page shows, at ``generated_at`` (wall clock)."""

    generated_at: float
    version: str
    backend: str
    replica: str | None  # this replica's id, when several may share the state
    services: tuple[ServiceStatus, ...]
    sinks: tuple[SinkStatus, ...]
    leases: tuple[Lease, ...] | None  # PostgreSQL only

    @property
    def replicas(self) -> tuple[str, ...]:
        """The replicas seen holding a lease (and this one), by id."""
        owners = {lease.owner for lease in self.leases or () if lease.owner is not None}
        if self.replica is not None:
            owners.add(self.replica)
        return tuple(sorted(owners))

    def to_json(self) -> dict[str, object]:
        return {
            "generated_at": self.generated_at,
            "version": self.version,
            "backend": self.backend,
            "replica": self.replica,
            "services": [service.to_json() for service in self.services],
            "sinks": [sink.to_json() for sink in self.sinks],
            "leases": None if self.leases is None else [lease.to_json() for lease in self.leases],
            "replicas": None if self.leases is None else list(self.replicas),
        }


class StatusSource:
    """Gathers a ``StatusSnapshot`` from the daemon's state, config and cycle log.

    ``config`` is read through a callable: a reload changes the sinks and watches shown.
    """

    def __init__(
        self,
        store: StateStore,
        config: Callable[[], Config],
        cycles: CycleLog,
        *,
        replica: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._cycles = cycles
        self._replica = replica
        self._clock = clock

    async def snapshot(self) -> StatusSnapshot:
        """Read the state now and return what the page shows."""
        config = self._config()
        now = self._clock()
        postgres = config.state.backend == "postgres"
        return StatusSnapshot(
            generated_at=now,
            version=__version__,
            backend=config.state.backend,
            replica=self._replica if postgres else None,
            services=await self._services(watched_services(config)),
            sinks=await self._sinks(config, now),
            leases=await self._leases() if postgres else None,
        )

    async def _services(self, sids: Sequence[str]) -> tuple[ServiceStatus, ...]:
        latest = self._cycles.latest()
        services = []
        for sid in sids:
            done, left = await self._store.baseline_counts(sid)
            services.append(ServiceStatus(sid, latest.get(sid), done + left, done, left))
        return tuple(services)

    async def _sinks(self, config: Config, now: float) -> tuple[SinkStatus, ...]:
        store = self._store
        pending = await store.counts_by_sink("pending")
        dead = await store.counts_by_sink("dead")
        oldest = await store.oldest_pending_by_sink()
        disabled = {entry.sink: entry for entry in await store.disabled_sinks()}
        failing = {entry.sink: entry for entry in await store.failing_sinks()}
        sinks = []
        for sink in config.sinks:
            enqueued = oldest.get(sink.name)
            sinks.append(
                SinkStatus(
                    name=sink.name,
                    type=sink.type,
                    pending=pending.get(sink.name, 0),
                    oldest_pending_age_seconds=None
                    if enqueued is None
                    else round(max(0.0, now - enqueued), 3),
                    dead=dead.get(sink.name, 0),
                    disabled=disabled.get(sink.name),
                    failing=failing.get(sink.name),
                    attempts=tuple(await store.recent_attempts(sink.name, RECENT_ATTEMPTS)),
                )
            )
        return tuple(sinks)

    async def _leases(self) -> tuple[Lease, ...] | None:
        # Imported here: a SQLite poller never loads the PostgreSQL driver.
        from poller.state.postgres.store import PostgresStore, read_leases

        if not isinstance(self._store, PostgresStore):
            return None
        return await read_leases(self._store.db)
