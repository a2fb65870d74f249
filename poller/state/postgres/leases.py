"""The leases and replicas tables, on a connection of the lease keeper's own.

A lease row says which replica owns a Service, at which epoch (the fencing token: it grows by
one at every acquisition) and until when. Every time is the database's ``now()``, never a
replica's clock: replicas whose clocks disagree still agree on who owns what. A stale replica
can never renew the new owner's lease: a renewal names the epoch it holds, and only a row with
that owner, that epoch and an expiry still ahead is extended.

A released lease is announced on the ``poller_leases`` channel (``NOTIFY``, payload: the
Service), so that a replica waiting in :meth:`LeaseTable.wait` picks it up at once instead of
at its next round.

The connection is autocommit and made again after a failure (the next call reconnects and
``LISTEN`` s again); every failure is a ``StateError`` (``StateUnavailableError`` when the
database cannot be reached).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from poller.errors import StateError
from poller.state.postgres.db import Connection, Settings, connect, translate

CHANNEL = "poller_leases"
# A replica's row is deleted this long after it expired (it is kept a while for operators).
FORGET_REPLICA_SECONDS = 3600.0

# Module-level names: inside LeaseTable, ``list`` is its method.
Rows = list[TupleRow]
Names = list[str]


@dataclass(frozen=True)
class Lease:
    """One lease row as ``poller state show`` lists it; ``expires_in`` <= 0: free or expired."""

    service_sid: str
    owner: str | None
    epoch: int
    expires_in: float


class LeaseTable:
    """The SQL of the leases and replicas tables, one statement per operation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: Connection | None = None

    @property
    def location(self) -> str:
        return self.settings.location

    async def heartbeat(self, replica: str, ttl: float) -> None:
        """Say that ``replica`` is alive for ``ttl`` seconds; forget replicas long gone."""
        await self._run(
            "WITH gone AS (DELETE FROM replicas "
            "WHERE expires_at < now() - make_interval(secs => %s) AND replica <> %s) "
            "INSERT INTO replicas AS r (replica, started_at, expires_at) "
            "VALUES (%s, now(), now() + make_interval(secs => %s)) "
            "ON CONFLICT (replica) DO UPDATE SET expires_at = EXCLUDED.expires_at, "
            "started_at = CASE WHEN r.expires_at < now() THEN now() ELSE r.started_at END",
            (FORGET_REPLICA_SECONDS, replica, replica, ttl),
        )

    async def leave(self, replica: str) -> None:
        """Say that ``replica`` is gone (a clean stop): the others count it out at once."""
        await self._run("DELETE FROM replicas WHERE replica = %s", (replica,))

    async def live_replicas(self) -> dict[str, int]:
        """Every replica alive now, with the number of unexpired leases it holds."""
        rows = await self._run(
            "SELECT r.replica, count(l.service_sid) FROM replicas AS r "
            "LEFT JOIN leases AS l ON l.owner = r.replica AND l.expires_at > now() "
            "WHERE r.expires_at > now() GROUP BY r.replica ORDER BY r.replica"
        )
        return {str(replica): int(held) for replica, held in rows}

    async def free(self, services: Collection[str]) -> Names:
        """Those of ``services`` that nobody holds now (no row, released, or expired)."""
        rows = await self._run(
            "SELECT s.sid FROM unnest(%s::text[]) AS s (sid) "
            "LEFT JOIN leases AS l ON l.service_sid = s.sid "
            "WHERE l.service_sid IS NULL OR l.owner IS NULL OR l.expires_at <= now() "
            "ORDER BY s.sid",
            (sorted(set(services)),),
        )
        return [str(row[0]) for row in rows]

    async def pending_elsewhere(self, services: Collection[str]) -> Names:
        """Services not in ``services`` that still have deliveries pending (unwatched now)."""
        rows = await self._run(
            "SELECT DISTINCT service_sid FROM deliveries "
            "WHERE state = 'pending' AND service_sid <> ALL(%s::text[]) ORDER BY service_sid",
            (sorted(set(services)),),
        )
        return [str(row[0]) for row in rows]

    async def acquire(self, service_sid: str, replica: str, ttl: float) -> int | None:
        """Take the lease of a free or expired Service; return its new epoch, or None (held)."""
        rows = await self._run(
            "INSERT INTO leases AS l (service_sid, owner, epoch, acquired_at, expires_at) "
            "VALUES (%s, %s, 1, now(), now() + make_interval(secs => %s)) "
            "ON CONFLICT (service_sid) DO UPDATE SET owner = EXCLUDED.owner, "
            "epoch = l.epoch + 1, acquired_at = EXCLUDED.acquired_at, "
            "expires_at = EXCLUDED.expires_at "
            "WHERE l.owner IS NULL OR l.expires_at <= now() "
            "RETURNING l.epoch",
            (service_sid, replica, ttl),
        )
        return int(rows[0][0]) if rows else None

    async def acquire_many(
        self, services: Collection[str], replica: str, ttl: float
    ) -> dict[str, int]:
        """:meth:`acquire` each of ``services`` in one statement; return those taken, with
        their epochs. Rows are locked in the order of their Service (no deadlock between two
        replicas taking overlapping sets)."""
        if not services:
            return {}
        rows = await self._run(
            "INSERT INTO leases AS l (service_sid, owner, epoch, acquired_at, expires_at) "
            "SELECT s.sid, %s, 1, now(), now() + make_interval(secs => %s) "
            "FROM unnest(%s::text[]) AS s (sid) ORDER BY s.sid "
            "ON CONFLICT (service_sid) DO UPDATE SET owner = EXCLUDED.owner, "
            "epoch = l.epoch + 1, acquired_at = EXCLUDED.acquired_at, "
            "expires_at = EXCLUDED.expires_at "
            "WHERE l.owner IS NULL OR l.expires_at <= now() "
            "RETURNING l.service_sid, l.epoch",
            (replica, ttl, sorted(set(services))),
        )
        return {str(sid): int(epoch) for sid, epoch in rows}

    async def renew(self, replica: str, epochs: Mapping[str, int], ttl: float) -> set[str]:
        """Extend the leases ``replica`` still holds at these epochs, unexpired; return them."""
        if not epochs:
            return set()
        sids = sorted(epochs)
        rows = await self._run(
            "UPDATE leases AS l SET expires_at = now() + make_interval(secs => %s) "
            "FROM unnest(%s::text[], %s::bigint[]) AS f (sid, epoch) "
            "WHERE l.service_sid = f.sid AND l.epoch = f.epoch AND l.owner = %s "
            "AND l.expires_at > now() RETURNING l.service_sid",
            (ttl, sids, [epochs[sid] for sid in sids], replica),
        )
        return {str(row[0]) for row in rows}

    async def release(self, replica: str, epochs: Mapping[str, int]) -> set[str]:
        """Give up these leases (those still ours at these epochs) and announce each one."""
        if not epochs:
            return set()
        sids = sorted(epochs)
        rows = await self._run(
            "WITH released AS (UPDATE leases AS l SET owner = NULL, expires_at = now() "
            "FROM unnest(%s::text[], %s::bigint[]) AS f (sid, epoch) "
            "WHERE l.service_sid = f.sid AND l.epoch = f.epoch AND l.owner = %s "
            "RETURNING l.service_sid) "
            "SELECT service_sid, pg_notify(%s, service_sid) FROM released",
            (sids, [epochs[sid] for sid in sids], replica, CHANNEL),
        )
        return {str(row[0]) for row in rows}

    async def list(self, services: Collection[str] | None = None) -> list[Lease]:
        """Every lease row (or those of ``services``), by Service, expiry from the database."""
        wanted = None if services is None else sorted(set(services))
        rows = await self._run(
            "SELECT service_sid, owner, epoch, "
            "extract(epoch FROM expires_at - now())::double precision FROM leases "
            "WHERE %s::text[] IS NULL OR service_sid = ANY(%s::text[]) ORDER BY service_sid",
            (wanted, wanted),
        )
        return [
            Lease(str(s), None if o is None else str(o), int(e), float(x)) for s, o, e, x in rows
        ]

    async def wait(self, seconds: float) -> Names:
        """Wait up to ``seconds`` for released leases; return their Services.

        Announcements made on this table's own connection are not returned. Whatever arrived
        while nobody waited is returned at once.
        """
        conn = await self._connection()
        own = conn.info.backend_pid
        found: Names = []
        try:
            async for notify in conn.notifies(timeout=max(0.0, seconds), stop_after=1):
                if notify.pid != own:
                    found.append(notify.payload)
            async for notify in conn.notifies(timeout=0.0):  # the rest of the batch
                if notify.pid != own:
                    found.append(notify.payload)
        except (psycopg.Error, OSError) as exc:
            await self.reset()
            raise translate(exc, self.location) from None
        return found

    async def reset(self) -> None:
        """Drop the connection (after a failure or a timeout); the next call reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):  # already broken
                await conn.close()

    async def close(self) -> None:
        await self.reset()

    async def _connection(self) -> Connection:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        await self.reset()
        conn = await connect(self.settings)
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
        except (psycopg.Error, OSError) as exc:
            await conn.close()
            raise translate(exc, self.location) from None
        self._conn = conn
        return conn

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        conn = await self._connection()
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql.encode(), params)
                return await cur.fetchall() if cur.description is not None else []
        except (psycopg.Error, OSError) as exc:
            error: StateError = translate(exc, self.location)
            if conn.broken or conn.closed or isinstance(exc, psycopg.OperationalError):
                await self.reset()
            raise error from None
