"""``PostgresStore``: both sides of the state in one PostgreSQL database, and its lifecycle."""

from __future__ import annotations

import time

from poller.errors import StateError
from poller.state.base import StateStore
from poller.state.models import Lease
from poller.state.postgres import schema
from poller.state.postgres.db import Database, Settings, connect, translate
from poller.state.postgres.fence import Fence
from poller.state.postgres.history import PgHistory
from poller.state.postgres.outbox import PgOutbox
from poller.state.postgres.sessions import PgSessions
from poller.state.views import SessionCounts, Summary

BACKEND = "postgres"


class PostgresStore(PgSessions, PgOutbox, PgHistory, StateStore):
    """The poller's state in PostgreSQL, shared by every replica.

    ``fence``: the leases of the replica this store writes for (every write for a Service is
    fenced, and only the Services it owns are delivered); None for an operator's command,
    which sees and may change every Service.
    """

    def __init__(self, db: Database, fence: Fence | None) -> None:
        self._db = db
        self._fence = fence

    @classmethod
    async def open(cls, settings: Settings, *, fence: Fence | None = None) -> PostgresStore:
        """Connect, apply the missing migrations (under the migration lock), open the pool.

        Raises StateUnavailableError (cannot connect: a wrong URL, password, or a server that
        is down) or StateError (a newer schema).
        """
        conn = await connect(settings)
        try:
            await schema.migrate(conn)
        except Exception as exc:
            if isinstance(exc, StateError):
                raise
            raise translate(exc, settings.location) from None
        finally:
            await conn.close()
        return cls(await Database.open(settings), fence)

    @property
    def db(self) -> Database:
        return self._db

    @property
    def fence(self) -> Fence | None:
        return self._fence

    @property
    def location(self) -> str:
        return self._db.location

    async def lost(self) -> str | None:
        """A database is never replaced under us; an outage is ``StateUnavailableError``."""
        return None

    async def close(self) -> None:
        await self._db.close()

    async def summary(self, now: float | None = None) -> Summary:
        """Return the overview of ``poller state show``: ``schema_version`` is the database's."""
        now = time.time() if now is None else now
        sessions = (
            await self._db.read(
                "SELECT COUNT(*) FILTER (WHERE gone_at IS NULL), "
                "COUNT(*) FILTER (WHERE gone_at IS NULL AND baselined), "
                "COUNT(*) FILTER (WHERE gone_at IS NOT NULL), "
                "COUNT(*) FILTER (WHERE gone_at IS NULL AND consecutive_failures > 0) "
                "FROM sessions"
            )
        )[0]
        watches = await self._db.read(  # by SID byte for byte, as SQLite orders them
            'SELECT service_sid, started_at FROM watches ORDER BY service_sid COLLATE "C"'
        )
        interactions = (await self._db.read("SELECT COUNT(*) FROM interactions"))[0][0]
        version = (await self._db.read("SELECT max(version) FROM poller_schema"))[0][0]
        return Summary(
            backend=BACKEND,
            location=self.location,
            schema_version=int(version or 0),
            sessions=SessionCounts(*(int(n) for n in sessions)),
            interactions_tracked=int(interactions),
            outbox=await self.outbox_summary(now),
            watches=tuple((str(sid), float(started)) for sid, started in watches),
            leases=await read_leases(self._db),
        )


async def read_leases(db: Database) -> tuple[Lease, ...]:
    """Every Service leased or watched, by SID: its owner, epoch and the lease's time left.

    The time left is the database's (``expires_at - now()``), never this host's clock; a
    watched Service without a lease row yet has none.
    """
    rows = await db.read(
        "SELECT service_sid, l.owner, coalesce(l.epoch, 0), "
        "extract(epoch FROM l.expires_at - now()) "
        "FROM leases AS l FULL JOIN watches AS w USING (service_sid) "
        'ORDER BY service_sid COLLATE "C"'  # by SID byte for byte, as the watches
    )
    return tuple(
        Lease(
            service_sid=str(sid),
            owner=None if owner is None else str(owner),
            epoch=int(epoch),
            expires_in=None if left is None else round(float(left), 3),
        )
        for sid, owner, epoch, left in rows
    )
