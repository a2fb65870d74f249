"""SQLite's history: events kept after delivery (``done_at``), their attempts, and replay.

The events table holds every event the state keeps, pending, dead and done alike, in its
original order (``seq``); ``attempts`` holds what each delivery attempt answered. Lists of ids
go in as one JSON array (``json_each``), so a selection of any size is one statement.

The records the reads hand out (``poller.state.views``) are imported where they are built:
polling and delivering only write here (see that module).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from poller.events import Event
from poller.state.history import Attempt, AttemptOutcome, History
from poller.state.sqlite.db import Database

if TYPE_CHECKING:
    from poller.state.views import AttemptRecord, HistoryQuery, KeptEvent, SinkOutcome, SinkState

_IDS = "(SELECT value FROM json_each(?))"
_ATTEMPT_COLUMNS = "event_id, sink, session_sid, at, latency, outcome, status, error"
# With MAX(a.id) as its only min/max aggregate, SQLite takes the bare columns from that row:
# the latest attempt's answer.
_ATTEMPTS_BY_SINK = (
    "SELECT a.event_id, a.sink, COUNT(*), MAX(a.id), a.at, a.status, a.error "  # noqa: S608
    f"FROM attempts a WHERE a.event_id IN {_IDS} GROUP BY a.event_id, a.sink"
)


def keep_attempts(conn: sqlite3.Connection, attempts: Sequence[Attempt]) -> None:
    """Insert ``attempts`` with their row's event, sink and session; a gone row's is ignored."""
    conn.executemany(
        f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) "  # noqa: S608 (constants only)
        "SELECT event_id, sink, session_sid, ?, ?, ?, ?, ? FROM deliveries WHERE id = ?",
        [(a.at, a.latency_seconds, a.outcome, a.status, a.error, a.delivery_id) for a in attempts],
    )


class SqliteHistory(History):
    """The history part of ``SqliteStore`` (see ``poller.state.history.History``)."""

    _db: Database

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Keep attempts whose outcome changed no row, in one transaction."""
        if attempts:
            with self._db.transaction() as conn:
                keep_attempts(conn, attempts)

    async def history(self, query: HistoryQuery) -> list[KeptEvent]:
        """Return the kept events ``query`` selects, in their original order."""
        from poller.state.views import KeptEvent

        where, params = _where(query)
        limit = -1 if query.limit is None else max(query.limit, 0)
        # The latest first (LIMIT keeps them), turned back into the original order below.
        rows = self._db.read(
            "SELECT e.id, e.body, e.seq, e.created_at, e.done_at FROM events e "  # noqa: S608
            f"WHERE {where} ORDER BY e.seq DESC LIMIT ?",
            (*params, limit),
        )
        rows.reverse()
        outcomes = self._outcomes([str(row[0]) for row in rows])
        return [
            KeptEvent(
                seq=int(row[2]),
                event=Event.from_json(row[1]),
                detected_at=float(row[3]),
                done_at=None if row[4] is None else float(row[4]),
                sinks=tuple(outcomes.get(str(row[0]), ())),
            )
            for row in rows
        ]

    async def replay(self, sink: str, event_ids: Sequence[str], *, now: float) -> list[str]:
        """Queue kept events again for ``sink``, in their original order; return the ids queued."""
        with self._db.transaction() as conn:
            chosen = conn.execute(
                f"SELECT id, session_sid FROM events WHERE id IN {_IDS} "  # noqa: S608
                "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id "
                "AND d.sink = ?) ORDER BY seq",
                (json.dumps(list(event_ids)), sink),
            ).fetchall()
            conn.executemany(
                "INSERT INTO deliveries (event_id, sink, session_sid, enqueued_at, "
                "next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                [(str(row[0]), sink, str(row[1]), now, now) for row in chosen],
            )
            queued = [str(row[0]) for row in chosen]
            conn.execute(
                f"UPDATE events SET done_at = NULL WHERE id IN {_IDS}",  # noqa: S608
                (json.dumps(queued),),
            )
        return queued

    async def prune_history(self, now: float, keep_seconds: float) -> int:
        """Forget events done over ``keep_seconds`` ago (their attempts cascade)."""
        with self._db.transaction() as conn:
            return conn.execute(
                "DELETE FROM events WHERE done_at IS NOT NULL AND done_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
                (now - keep_seconds,),
            ).rowcount

    async def recent_attempts(self, sink: str, limit: int) -> list[AttemptRecord]:
        """Return the latest ``limit`` kept attempts for ``sink``, the newest first."""
        rows = self._db.read(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts "  # noqa: S608 (constants only)
            "WHERE sink = ? ORDER BY id DESC LIMIT ?",
            (sink, max(limit, 0)),
        )
        return [_attempt(row) for row in rows]

    async def oldest_pending_by_sink(self) -> dict[str, float]:
        """Return ``{sink: enqueue time of its oldest pending row}``, for sinks with one."""
        rows = self._db.read(
            "SELECT sink, MIN(enqueued_at) FROM deliveries WHERE state = 'pending' "
            "GROUP BY sink ORDER BY sink"
        )
        return {str(sink): float(oldest) for sink, oldest in rows}

    async def kept_events(self) -> int:
        """Return how many events the state keeps (pending, dead and done alike)."""
        return int(self._db.read("SELECT COUNT(*) FROM events")[0][0])

    def _outcomes(self, event_ids: list[str]) -> dict[str, list[SinkOutcome]]:
        """Each event's ``SinkOutcome`` per sink it has a row or an attempt for, by sink."""
        from poller.state.views import SinkOutcome

        if not event_ids:
            return {}
        ids = json.dumps(event_ids)
        states: dict[tuple[str, str], SinkState] = {
            (str(event_id), str(sink)): cast("SinkState", state)
            for event_id, sink, state in self._db.read(
                f"SELECT event_id, sink, state FROM deliveries WHERE event_id IN {_IDS}",  # noqa: S608
                (ids,),
            )
        }
        tried = {(str(r[0]), str(r[1])): r for r in self._db.read(_ATTEMPTS_BY_SINK, (ids,))}
        found: dict[str, list[SinkOutcome]] = {}
        for event_id, sink in sorted(states.keys() | tried.keys()):
            last = tried.get((event_id, sink))
            found.setdefault(event_id, []).append(
                SinkOutcome(
                    sink=sink,
                    state=states.get((event_id, sink), "delivered"),
                    attempts=0 if last is None else int(last[2]),
                    last_at=None if last is None else float(last[4]),
                    last_status=None if last is None else last[5],
                    last_error=None if last is None else last[6],
                )
            )
        return found


def _where(query: HistoryQuery) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (fixed text and placeholders) of ``query``, and its parameters."""
    clauses, params = ["1"], []
    for clause, value in (
        ("e.session_sid = ?", query.session_sid),
        ("e.type = ?", query.type),
        ("e.created_at >= ?", query.since),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    if query.sink is not None:
        clauses.append(
            "(EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.sink = ?) "
            "OR EXISTS (SELECT 1 FROM attempts a WHERE a.event_id = e.id AND a.sink = ?))"
        )
        params += [query.sink, query.sink]
    if query.event_ids:
        clauses.append(f"e.id IN {_IDS}")
        params.append(json.dumps(list(query.event_ids)))
    return " AND ".join(clauses), params


def _attempt(row: sqlite3.Row) -> AttemptRecord:
    from poller.state.views import AttemptRecord

    return AttemptRecord(
        event_id=str(row[0]),
        sink=str(row[1]),
        session_sid=str(row[2]),
        at=float(row[3]),
        latency_seconds=float(row[4]),
        outcome=cast(AttemptOutcome, row[5]),
        status=None if row[6] is None else int(row[6]),
        error=row[7],
    )
