"""Every row of a state file, read into a backend-neutral ``Snapshot`` (``state migrate``).

The file is opened as the daemon opens it, exclusively: a file a running poller holds is
refused (``StateLockedError``), and the lock is kept while the caller copies the snapshot, so
no poller can start on the file and write what the copy would miss. Every table is read in one
read transaction: one consistent picture even beside an operator's command.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from poller.errors import StateError
from poller.state.models import DisabledSink
from poller.state.snapshot import (
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

Row = tuple[Any, ...]  # one row as sqlite3 gives it: each reader below converts its columns

_SESSION_COLUMNS = (
    "session_sid, service_sid, baselined, new_traffic, last_success_at, consecutive_failures, "
    "last_error, last_failure_at, activity_marker, status, unsettled_until, added_at, gone_at, "
    "watch_listed, watch_last_interaction"
)
_DELIVERY_COLUMNS = (
    "id, event_id, sink, session_sid, state, attempts, enqueued_at, next_attempt_at, "
    "last_error, last_status, dead_at"
)


@contextlib.contextmanager
def held_snapshot(path: Path) -> Iterator[Snapshot]:
    """Yield every row of the state file at ``path``, holding its lock until the block ends.

    Raises StateError for a missing file, StateLockedError when a poller holds it, and the
    other ``open_database`` errors (a foreign or newer file, left untouched).
    """
    path = Path(path)
    if not path.is_file():
        raise StateError(f"state file {path} does not exist: there is nothing to migrate")
    db = open_database(path)
    try:
        try:
            snapshot = dump(db.conn, str(path))
        except sqlite3.Error as exc:
            raise db.error(exc) from exc
        yield snapshot
    finally:
        db.close()


def dump(conn: sqlite3.Connection, source: str) -> Snapshot:
    """Read every table of the open state file ``conn`` in one read transaction."""
    conn.execute("BEGIN")
    try:
        return Snapshot(
            source=source,
            schema_version=user_version(conn),
            watches=[
                WatchRow(str(sid), float(started))
                for sid, started in _rows(conn, "service_sid, started_at", "watches", "1")
            ],
            sessions=[_session(row) for row in _rows(conn, _SESSION_COLUMNS, "sessions", "1")],
            interactions=[
                InteractionRow(*row)
                for row in _rows(
                    conn,
                    "session_sid, sid, date_updated, inbound_status, outbound_status",
                    "interactions",
                    "1, 2",
                )
            ],
            session_fingerprints=_fingerprints(conn),
            events=[
                EventRow(*row)
                for row in _rows(conn, "id, service_sid, session_sid, body", "events", "1")
            ],
            deliveries=[
                _delivery(row) for row in _rows(conn, _DELIVERY_COLUMNS, "deliveries", "1")
            ],
            slack_threads=[
                SlackThreadRow(*row)
                for row in _rows(conn, "sink, session_sid, ts", "slack_threads", "1, 2")
            ],
            sink_pacing=[
                SinkPaceRow(str(sink), float(not_before), float(set_at))
                for sink, not_before, set_at in _rows(
                    conn, "sink, not_before, set_at", "sink_pacing", "1"
                )
            ],
            disabled_sinks=[
                DisabledSink(str(sink), float(since), float(last_at), status, str(reason))
                for sink, since, last_at, status, reason in _rows(
                    conn, "sink, since, last_at, status, reason", "disabled_sinks", "1"
                )
            ],
        )
    finally:
        conn.execute("COMMIT")


def _rows(conn: sqlite3.Connection, columns: str, table: str, order: str) -> list[Row]:
    # Every part is one of this module's constants, never input.
    select = f"SELECT {columns} FROM {table} ORDER BY {order}"  # noqa: S608
    return [tuple(row) for row in conn.execute(select)]


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


def _fingerprints(conn: sqlite3.Connection) -> list[SessionFingerprintRow]:
    columns = "session_sid, status, closed_reason, date_expiry, date_ended, checked_at"
    return [
        SessionFingerprintRow(session, status, reason, expiry, ended, float(checked))
        for session, status, reason, expiry, ended, checked in _rows(
            conn, columns, "session_fingerprints", "1"
        )
    ]


def _delivery(row: Row) -> DeliveryRow:
    return DeliveryRow(
        id=int(row[0]),
        event_id=str(row[1]),
        sink=str(row[2]),
        session_sid=str(row[3]),
        state=str(row[4]),
        attempts=int(row[5]),
        enqueued_at=float(row[6]),
        next_attempt_at=float(row[7]),
        last_error=row[8],
        last_status=None if row[9] is None else int(row[9]),
        dead_at=_real(row[10]),
    )
