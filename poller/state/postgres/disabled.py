"""The sinks an answer disabled (a 410, a revoked token), noted in PostgreSQL.

An operator's bookkeeping as much as a daemon's: never fenced (a sink is every replica's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from poller.state.base import Outbox
from poller.state.models import DisabledSink, short_error
from poller.state.postgres.db import Database

_DISABLED_COLUMNS = "sink, since, last_at, status, reason"
_CLEAR_DISABLED = (
    "DELETE FROM disabled_sinks WHERE %(sink)s::text IS NULL OR sink = %(sink)s "
    "RETURNING sink, since, last_at, status, reason"
)


class PgDisabledSinks(Outbox):
    """The ``disabled_sinks`` part of ``Outbox`` on the ``Database`` ``_db``."""

    _db: Database

    async def record_sink_disabled(
        self, sink: str, *, status: int | None, reason: str, now: float
    ) -> None:
        """Note that ``sink`` was disabled by an answer; a noted sink keeps its ``since``."""
        await self._db.read(
            "INSERT INTO disabled_sinks (sink, since, last_at, status, reason) "
            "VALUES (%(sink)s, %(now)s, %(now)s, %(status)s, %(reason)s) "
            "ON CONFLICT (sink) DO UPDATE SET last_at = excluded.last_at, "
            "status = excluded.status, reason = excluded.reason",
            {"sink": sink, "now": now, "status": status, "reason": short_error(reason)},
        )

    async def disabled_sinks(self, sink: str | None = None) -> list[DisabledSink]:
        """Return the sinks noted as disabled (one, or all), by name."""
        rows = await self._db.read(
            f"SELECT {_DISABLED_COLUMNS} FROM disabled_sinks "  # noqa: S608 (fixed text)
            "WHERE %(sink)s::text IS NULL OR sink = %(sink)s ORDER BY sink",
            {"sink": sink},
        )
        return [_disabled_sink(row) for row in rows]

    async def clear_sink_disabled(self, sink: str | None = None) -> list[DisabledSink]:
        """Forget that ``sink`` (``None``: every sink) was disabled; return what was noted."""
        rows = await self._db.read(_CLEAR_DISABLED, {"sink": sink})
        return sorted((_disabled_sink(row) for row in rows), key=lambda d: d.sink)


def _disabled_sink(row: Sequence[Any]) -> DisabledSink:
    sink, since, last_at, status, reason = row
    return DisabledSink(
        sink=str(sink),
        since=float(since),
        last_at=float(last_at),
        status=None if status is None else int(status),
        reason=str(reason),
    )
