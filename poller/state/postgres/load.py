"""Loading a whole ``Snapshot`` into an empty PostgreSQL state, in one transaction.

``poller state migrate`` moves a SQLite state here: the migrations are applied first (as a
replica would at start), then ONE transaction locks the state tables against any replica
started too early, refuses a database that already holds a watch, a session or an event
(nothing is written), and copies every table with ``COPY``. Deliveries are copied in their
order, so the identity column numbers them anew in the same order: each (sink, session) queue
keeps its order, its attempts and its times, and no event is detected again. Events come in
their original order and are numbered anew the same way (``seq``); the kept attempts, which
the snapshot gives without their Service, take their event's on the way in. The tables are
read as they are copied (``COPY``): nothing needs the whole state in memory.
"""

from __future__ import annotations

import dataclasses
import operator
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg

from poller.errors import StateError
from poller.state.models import DisabledSink
from poller.state.postgres import schema
from poller.state.postgres.db import Cursor, Settings, connect, translate
from poller.state.snapshot import (
    AttemptRow,
    DeliveryRow,
    EventRow,
    InteractionRow,
    SessionFingerprintRow,
    SessionRow,
    SinkPaceRow,
    SlackThreadRow,
    Snapshot,
    WatchRow,
)

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
    "attempts",
)
# A copy of a large state takes longer than the poller's own statement timeout allows: one
# COPY of millions of interactions takes minutes. The operator who runs it can interrupt it
# (nothing is written then); only waiting for a lock is bounded.
LOAD_STATEMENT_TIMEOUT = "0"
LOCK_TIMEOUT = "10s"


async def load(settings: Settings, snapshot: Snapshot) -> dict[str, int]:
    """Migrate the database at ``settings`` and copy ``snapshot`` into it, all or nothing.

    Return the rows copied per table (``_REPORTED``), deliveries counted as
    ``deliveries_pending`` and ``deliveries_dead``. Raises StateError when the database is
    not empty (nothing written), is newer than this poller, or refuses a statement;
    StateUnavailableError when it cannot be reached.
    """
    conn = await connect(settings)
    try:
        await schema.migrate(conn)
        async with conn.transaction(), conn.cursor() as cur:
            await cur.execute(f"SET LOCAL statement_timeout = '{LOAD_STATEMENT_TIMEOUT}'")
            await cur.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            await cur.execute(f"LOCK TABLE {', '.join(TABLES)} IN SHARE ROW EXCLUSIVE MODE")
            await _refuse_non_empty(cur, settings.location)
            counts = await _copy_all(cur, snapshot)
            await cur.execute(
                "INSERT INTO meta (key, value) VALUES ('migrated_from', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (f"{snapshot.source} (schema {snapshot.schema_version})",),
            )
    except psycopg.Error as exc:
        raise translate(exc, settings.location) from None
    finally:
        await conn.close()
    return counts


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


async def _copy_all(cur: Cursor, s: Snapshot) -> dict[str, int]:
    """Copy every table in an order the foreign keys allow; return the rows per table."""
    states: Counter[str] = Counter()
    tables: Sequence[tuple[str, type, Iterable[Any]]] = (
        ("watches", WatchRow, s.watches),
        ("sessions", SessionRow, s.sessions),
        ("interactions", InteractionRow, s.interactions),
        ("session_fingerprints", SessionFingerprintRow, s.session_fingerprints),
        ("events", EventRow, s.events),
        ("deliveries", DeliveryRow, _tally(s.deliveries, states)),
        ("slack_threads", SlackThreadRow, s.slack_threads),
        ("sink_pacing", SinkPaceRow, s.sink_pacing),
        ("disabled_sinks", DisabledSink, s.disabled_sinks),
    )
    counts: dict[str, int] = {}
    for table, row_type, rows in tables:
        # Each row's fields are named as its table's columns; a delivery's id and an event's
        # seq only order the rows: the target numbers them anew, in the order they are copied.
        columns = [
            f.name for f in dataclasses.fields(row_type) if (table, f.name) not in _RENUMBERED
        ]
        counts[table] = await _copy(cur, table, columns, map(operator.attrgetter(*columns), rows))
    counts["attempts"] = await _copy_attempts(cur, s.attempts)
    counts["deliveries_pending"], counts["deliveries_dead"] = states["pending"], states["dead"]
    return {name: counts[name] for name in _REPORTED}


# The counts returned, in the order ``poller state migrate`` prints them.
_REPORTED = (
    "watches",
    "sessions",
    "interactions",
    "session_fingerprints",
    "events",
    "deliveries_pending",
    "deliveries_dead",
    "attempts",
    "slack_threads",
    "sink_pacing",
    "disabled_sinks",
)


# Numbered anew by the target, in the order copied: a delivery's id, an event's seq.
_RENUMBERED = {("deliveries", "id"), ("events", "seq")}
_ATTEMPTS_IN = (
    "CREATE TEMPORARY TABLE attempts_in (place bigint GENERATED ALWAYS AS IDENTITY, "
    "event_id text, sink text, session_sid text, at float8, latency float8, outcome text, "
    "status integer, error text) ON COMMIT DROP"
)
_ATTEMPTS_FROM_IN = (
    "INSERT INTO attempts "
    "(event_id, sink, service_sid, session_sid, at, latency, outcome, status, error) "
    "SELECT a.event_id, a.sink, e.service_sid, a.session_sid, a.at, a.latency, a.outcome, "
    "a.status, a.error FROM attempts_in a JOIN events e ON e.id = a.event_id ORDER BY a.place"
)


async def _copy_attempts(cur: Cursor, rows: Iterable[AttemptRow]) -> int:
    """Copy the attempts (oldest first) through a temporary table that gives each its Service.

    Raises StateError (nothing written) when an attempt names an event the snapshot lacks.
    """
    await cur.execute(_ATTEMPTS_IN)
    columns = [f.name for f in dataclasses.fields(AttemptRow)]
    copied = await _copy(cur, "attempts_in", columns, map(operator.attrgetter(*columns), rows))
    await cur.execute(_ATTEMPTS_FROM_IN)
    if cur.rowcount != copied:
        raise StateError(
            f"{copied - cur.rowcount} of the {copied} attempts to copy name no event of the "
            "state: nothing was written"
        )
    return copied


def _tally(rows: Iterable[DeliveryRow], states: Counter[str]) -> Iterator[DeliveryRow]:
    for row in rows:
        states[row.state] += 1
        yield row


async def _copy(
    cur: Cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """``COPY table (columns) FROM STDIN`` with ``rows``, in their order; return how many."""
    copied = 0
    async with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            await copy.write_row(row)
            copied += 1
    return copied
