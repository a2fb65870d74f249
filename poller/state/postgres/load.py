"""Loading a whole ``Snapshot`` into an empty PostgreSQL state, in one transaction.

``poller state migrate`` moves a SQLite state here: the migrations are applied first (as a
replica would at start), then ONE transaction locks the state tables against any replica
started too early, refuses a database that already holds a watch, a session or an event
(nothing is written), and copies every table with ``COPY``. Deliveries are copied in their
order, so the identity column numbers them anew in the same order: each (sink, session) queue
keeps its order, its attempts and its times, and no event is detected again.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from poller.errors import StateError
from poller.state.postgres import schema
from poller.state.postgres.db import Cursor, Settings, connect, translate
from poller.state.snapshot import Snapshot

# Written by the load; locked so that a replica started on the database waits (or fails on
# its own statement timeout) instead of writing beside the copy.
TABLES = (
    "watches",
    "sessions",
    "interactions",
    "session_fingerprints",
    "events",
    "deliveries",
    "slack_threads",
    "sink_pacing",
    "disabled_sinks",
)
# A copy of a large state takes longer than the poller's own statement timeout allows.
LOAD_STATEMENT_TIMEOUT = "10min"
LOCK_TIMEOUT = "10s"


async def load(settings: Settings, snapshot: Snapshot) -> None:
    """Migrate the database at ``settings`` and copy ``snapshot`` into it, all or nothing.

    Raises StateError when the database is not empty (nothing written), is newer than this
    poller, or refuses a statement; StateUnavailableError when it cannot be reached.
    """
    conn = await connect(settings)
    try:
        await schema.migrate(conn)
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(f"SET LOCAL statement_timeout = '{LOAD_STATEMENT_TIMEOUT}'")
            await cur.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await cur.execute(f"LOCK TABLE {', '.join(TABLES)} IN SHARE ROW EXCLUSIVE MODE")
            await _refuse_non_empty(cur, settings.location)
            await _copy_all(cur, snapshot)
            await cur.execute(
                "INSERT INTO meta (key, value) VALUES ('migrated_from', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (f"sqlite {snapshot.source} (schema {snapshot.schema_version})",),
            )
    except psycopg.Error as exc:
        raise translate(exc, settings.location) from None
    finally:
        await conn.close()


async def _refuse_non_empty(cur: Cursor, location: str) -> None:
    await cur.execute(
        "SELECT (SELECT count(*) FROM watches), (SELECT count(*) FROM sessions), "
        "(SELECT count(*) FROM events)"
    )
    row = await cur.fetchone()
    watches, sessions, events = (int(n) for n in row) if row else (0, 0, 0)
    if watches or sessions or events:
        raise StateError(
            f"state database {location} is not empty ({watches} watches, {sessions} "
            f"sessions, {events} events): state migrate copies into an empty database only; "
            "nothing was written"
        )


async def _copy_all(cur: Cursor, s: Snapshot) -> None:
    # Each row's fields are named as the table's columns; deliveries add their Service (whose
    # owner delivers them) and leave their id to the identity column.
    tables: Sequence[tuple[str, Sequence[Any]]] = (
        ("watches", s.watches),
        ("sessions", s.sessions),
        ("interactions", s.interactions),
        ("session_fingerprints", s.session_fingerprints),
        ("events", s.events),
        ("slack_threads", s.slack_threads),
        ("sink_pacing", s.sink_pacing),
        ("disabled_sinks", s.disabled_sinks),
    )
    for table, rows in tables:
        if rows:
            columns = [f.name for f in dataclasses.fields(rows[0])]
            await _copy(cur, table, columns, map(operator.attrgetter(*columns), rows))
    service_of = {event.id: event.service_sid for event in s.events}
    fields = operator.attrgetter(*(c for c in _DELIVERY_COLUMNS if c != "service_sid"))
    await _copy(
        cur,
        "deliveries",
        _DELIVERY_COLUMNS,
        ((service_of[d.event_id], *fields(d)) for d in sorted(s.deliveries, key=lambda d: d.id)),
    )


_DELIVERY_COLUMNS = (
    "service_sid",
    "event_id",
    "sink",
    "session_sid",
    "state",
    "attempts",
    "enqueued_at",
    "next_attempt_at",
    "last_error",
    "last_status",
    "dead_at",
)


async def _copy(
    cur: Cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """``COPY table (columns) FROM STDIN`` with ``rows``, in their order."""
    async with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            await copy.write_row(row)
