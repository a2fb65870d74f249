"""Every row of a state file, read as a backend-neutral ``Snapshot`` (``state migrate``).

The file is opened as the daemon opens it, exclusively: a file a running poller holds is
refused (``StateLockedError``), and the lock is kept while the caller copies the snapshot, so
no poller can start on the file and write what the copy would miss. Every table is read in one
read transaction (one consistent picture, even beside an operator's command), row by row as
the caller iterates: a state of millions of interactions is never all in memory.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from poller.errors import StateError
from poller.state.models import DisabledSink
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
from poller.state.sqlite.db import open_database
from poller.state.sqlite.schema import user_version

T = TypeVar("T")
Row = tuple[Any, ...]  # one row as sqlite3 gives it: each reader below converts its columns


class Rows(Generic[T]):
    """A table read on demand: each iteration runs ``select`` and converts each row."""

    def __init__(self, conn: sqlite3.Connection, select: str, make: Callable[[Row], T]) -> None:
        self._conn = conn
        self._select = select
        self._make = make

    def __iter__(self) -> Iterator[T]:
        for row in self._conn.execute(self._select):
            yield self._make(tuple(row))


@contextlib.contextmanager
def held_snapshot(path: Path) -> Iterator[Snapshot]:
    """Yield every row of the state file at ``path``, holding its lock until the block ends.

    The rows are read when the block iterates them, all in one read transaction. Raises
    StateError for a missing file or a failed read, StateLockedError when a poller holds the
    file, and the other ``open_database`` errors (a foreign or newer file, left untouched).
    """
    path = Path(path)
    if not path.is_file():
        raise StateError(f"state file {path} does not exist: there is nothing to migrate")
    db = open_database(path)
    try:
        db.conn.execute("BEGIN")
        yield snapshot(db.conn, f"sqlite {path}")
        db.conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise db.error(exc) from exc
    finally:
        db.close()  # a read transaction left open ends with the connection


def snapshot(conn: sqlite3.Connection, source: str) -> Snapshot:
    """Every table of the open state file ``conn``, each read when iterated."""

    def rows(make: Callable[[Row], T], columns: str, table: str, order: str = "1") -> Rows[T]:
        # Every part is one of this module's constants, never input.
        return Rows(conn, f"SELECT {columns} FROM {table} ORDER BY {order}", make)  # noqa: S608

    return Snapshot(
        source=source,
        schema_version=user_version(conn),
        watches=rows(
            lambda r: WatchRow(str(r[0]), float(r[1])), "service_sid, started_at", "watches"
        ),
        sessions=rows(_session, _SESSION_COLUMNS, "sessions"),
        interactions=rows(
            lambda r: InteractionRow(*r),
            "session_sid, sid, date_updated, inbound_status, outbound_status",
            "interactions",
            "1, 2",
        ),
        session_fingerprints=rows(
            lambda r: SessionFingerprintRow(r[0], r[1], r[2], r[3], r[4], float(r[5])),
            "session_sid, status, closed_reason, date_expiry, date_ended, checked_at",
            "session_fingerprints",
        ),
        events=rows(_event, _EVENT_COLUMNS, "events", "seq"),
        deliveries=rows(_delivery, _DELIVERY_COLUMNS, _DELIVERY_TABLE, "d.id"),
        slack_threads=rows(
            lambda r: SlackThreadRow(*r), "sink, session_sid, ts", "slack_threads", "1, 2"
        ),
        sink_pacing=rows(
            lambda r: SinkPaceRow(str(r[0]), float(r[1]), float(r[2])),
            "sink, not_before, set_at",
            "sink_pacing",
        ),
        disabled_sinks=rows(
            lambda r: DisabledSink(str(r[0]), float(r[1]), float(r[2]), r[3], str(r[4])),
            "sink, since, last_at, status, reason",
            "disabled_sinks",
        ),
        attempts=rows(_attempt, _ATTEMPT_COLUMNS, "attempts", "id"),
    )


_SESSION_COLUMNS = (
    "session_sid, service_sid, baselined, new_traffic, last_success_at, consecutive_failures, "
    "last_error, last_failure_at, activity_marker, status, unsettled_until, added_at, gone_at, "
    "watch_listed, watch_last_interaction"
)
_EVENT_COLUMNS = "id, service_sid, session_sid, body, type, created_at, done_at, seq"
_ATTEMPT_COLUMNS = "event_id, sink, session_sid, at, latency, outcome, status, error"
# A delivery's Service is its event's: the one whose owner delivers it.
_DELIVERY_TABLE = "deliveries AS d JOIN events AS e ON e.id = d.event_id"
_DELIVERY_COLUMNS = (
    "d.id, d.event_id, d.sink, e.service_sid, d.session_sid, d.state, d.attempts, "
    "d.enqueued_at, d.next_attempt_at, d.last_error, d.last_status, d.dead_at"
)


def _real(value: Any) -> float | None:
    # SQLite keeps a REAL that happens to be whole as an integer: the copy is a float again.
    return None if value is None else float(value)


def _session(row: Row) -> SessionRow:
    return SessionRow(
        session_sid=str(row[0]),
        service_sid=str(row[1]),
        baselined=bool(row[2]),
        new_traffic=bool(row[3]),
        last_success_at=_real(row[4]),
        consecutive_failures=int(row[5]),
        last_error=row[6],
        last_failure_at=_real(row[7]),
        activity_marker=row[8],
        status=row[9],
        unsettled_until=_real(row[10]),
        added_at=float(row[11]),
        gone_at=_real(row[12]),
        watch_listed=bool(row[13]),
        watch_last_interaction=row[14],
    )


def _event(row: Row) -> EventRow:
    return EventRow(
        id=str(row[0]),
        service_sid=str(row[1]),
        session_sid=str(row[2]),
        body=str(row[3]),
        type=str(row[4]),
        created_at=float(row[5]),
        done_at=_real(row[6]),
        seq=int(row[7]),
    )


def _attempt(row: Row) -> AttemptRow:
    return AttemptRow(
        event_id=str(row[0]),
        sink=str(row[1]),
        session_sid=str(row[2]),
        at=float(row[3]),
        latency=float(row[4]),
        outcome=str(row[5]),
        status=None if row[6] is None else int(row[6]),
        error=row[7],
    )


def _delivery(row: Row) -> DeliveryRow:
    return DeliveryRow(
        id=int(row[0]),
        event_id=str(row[1]),
        sink=str(row[2]),
        service_sid=str(row[3]),
        session_sid=str(row[4]),
        state=str(row[5]),
        attempts=int(row[6]),
        enqueued_at=float(row[7]),
        next_attempt_at=float(row[8]),
        last_error=row[9],
        last_status=None if row[10] is None else int(row[10]),
        dead_at=_real(row[11]),
    )
