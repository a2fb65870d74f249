"""SQLite's outbox: one row per (event, sink) until the sink accepts the event.

Each (sink, session) pair is a queue delivered strictly in enqueue order; ``queue_heads``
(kept by triggers, see ``schema.py``) holds the first pending row of every queue, so finding
what is due costs one row per queue however long the queues behind failing heads grow. What
the rows' attempts leave in the history is written here too, in the same transactions
(``history.py``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

from poller.events import Event
from poller.state.base import Outbox, RowState
from poller.state.history import Attempt
from poller.state.models import DeadLetter, Delivery, DisabledSink, FailingSink, short_error
from poller.state.outbox_rows import outbox_rows
from poller.state.sqlite.db import Database
from poller.state.sqlite.history import keep_attempts

# SQLite's default limit on bound parameters is 999 in older builds.
_CHUNK = 500
_GONE_SINK = "state = 'dead', dead_at = ?, last_error = 'the sink is no longer configured'"
_DISABLED = (
    "SELECT sink, since, last_at, status, reason FROM disabled_sinks "
    "WHERE ?1 IS NULL OR sink = ?1 ORDER BY sink"
)
_REQUEUED = "state = 'pending', attempts = 0, dead_at = NULL, next_attempt_at = ?"


class SqliteOutbox(Outbox):
    """The outbox half of ``SqliteStore`` (see ``poller.state.base.Outbox``)."""

    _db: Database

    async def due(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        """Return up to ``limit`` deliveries of ``sink`` ready now, in enqueue order.

        Only the first pending row of each session's queue can be due (its ``next_attempt_at``
        <= ``now``; ``now=None`` ignores timers). Dead rows never block a queue.
        """
        if limit <= 0:
            return []
        rows = self._db.read(
            "SELECT d.*, e.body FROM queue_heads h "
            "JOIN deliveries d ON d.id = h.delivery_id JOIN events e ON e.id = d.event_id "
            "WHERE h.sink = ?1 AND (?2 IS NULL OR h.next_attempt_at <= ?2) "
            "ORDER BY h.delivery_id LIMIT ?3",
            (sink, now, limit),
        )
        return [_delivery(row) for row in rows]

    async def backlog(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        """Return up to ``limit`` pending deliveries of ``sink``, whole queues, in enqueue order.

        Every pending row of each session whose queue head is due (``now=None``: all), for
        sinks that send a backlog as one digest; a digest keeps each session's order inside.
        """
        if limit <= 0:
            return []
        rows = self._db.read(
            "SELECT d.*, e.body FROM queue_heads h "
            "JOIN deliveries d ON d.sink = h.sink AND d.session_sid = h.session_sid "
            "AND d.state = 'pending' JOIN events e ON e.id = d.event_id "
            "WHERE h.sink = ?1 AND (?2 IS NULL OR h.next_attempt_at <= ?2) "
            "ORDER BY d.id LIMIT ?3",
            (sink, now, limit),
        )
        return [_delivery(row) for row in rows]

    async def ack(
        self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
    ) -> None:
        """Delete delivered rows; keep ``history`` and the events (done), unless it is None.

        ``history`` None: each event no other delivery still needs goes with them.
        """
        if not delivery_ids:
            return
        keep = None
        if history is not None:
            chosen = set(delivery_ids)
            history = [a for a in history if a.delivery_id in chosen]
            keep = max((a.at for a in history), default=time.time())
        with self._db.transaction() as conn:
            if history:
                keep_attempts(conn, history)  # before the rows they name go
            for chunk in _chunks(delivery_ids):
                _delete_where(conn, f"id IN ({_marks(chunk)})", chunk, done_at=keep)

    async def retry_later(
        self,
        delivery_id: int,
        *,
        next_attempt_at: float,
        error: str,
        status: int | None,
        attempt: Attempt | None = None,
    ) -> None:
        """Count one failed attempt and hold the row (and its queue) until ``next_attempt_at``."""
        with self._db.transaction() as conn:
            held = conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?, "
                "last_error = ?, last_status = ? WHERE id = ? AND state = 'pending'",
                (next_attempt_at, short_error(error), status, delivery_id),
            ).rowcount
            if held and attempt is not None:
                keep_attempts(conn, [attempt])

    async def dead_letter(
        self,
        delivery_id: int,
        *,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> None:
        """Count one failed attempt and give up: the row stops blocking its queue."""
        with self._db.transaction() as conn:
            dead = conn.execute(
                "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, dead_at = ?, "
                "last_error = ?, last_status = ? WHERE id = ? AND state = 'pending'",
                (now, short_error(error), status, delivery_id),
            ).rowcount
            if dead and attempt is not None:
                keep_attempts(conn, [attempt])

    async def dead_letter_other_sinks(self, sinks: Sequence[str], *, now: float) -> int:
        """Dead-letter what is pending for sinks not in ``sinks``; return how many rows.

        A sink removed from the config can take nothing: its events are kept, visible in
        ``poller outbox list``, and ``poller outbox retry --sink NAME`` requeues them if the
        sink comes back.
        """
        where = f"state = 'pending' AND sink NOT IN ({_marks(sinks)})"
        update = f"UPDATE deliveries SET {_GONE_SINK} WHERE {where}"  # noqa: S608
        # A sink that is gone is not "disabled" any more: its events are dead letters now.
        forget = f"DELETE FROM disabled_sinks WHERE sink NOT IN ({_marks(sinks)})"  # noqa: S608
        with self._db.transaction() as conn:
            conn.execute(forget, sinks)
            return conn.execute(update, (now, *sinks)).rowcount

    async def record_sink_disabled(
        self, sink: str, *, status: int | None, reason: str, now: float
    ) -> None:
        """Note that ``sink`` was disabled by an answer; a noted sink keeps its ``since``."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO disabled_sinks (sink, since, last_at, status, reason) "
                "VALUES (?1, ?2, ?2, ?3, ?4) ON CONFLICT (sink) DO UPDATE SET "
                "last_at = excluded.last_at, status = excluded.status, reason = excluded.reason",
                (sink, now, status, short_error(reason)),
            )

    async def disabled_sinks(self, sink: str | None = None) -> list[DisabledSink]:
        """Return the sinks noted as disabled (one, or all), by name."""
        return [_disabled_sink(row) for row in self._db.read(_DISABLED, (sink,))]

    async def clear_sink_disabled(self, sink: str | None = None) -> list[DisabledSink]:
        """Forget that ``sink`` (``None``: every sink) was disabled; return what was noted."""
        with self._db.transaction() as conn:
            cleared = [_disabled_sink(row) for row in conn.execute(_DISABLED, (sink,))]
            conn.execute("DELETE FROM disabled_sinks WHERE ?1 IS NULL OR sink = ?1", (sink,))
        return cleared

    async def dead_letters(self, sink: str | None = None) -> list[DeadLetter]:
        """Return dead-lettered deliveries (of one sink, or all), oldest first."""
        rows = self._db.read(
            "SELECT d.*, e.body FROM deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.state = 'dead' AND (?1 IS NULL OR d.sink = ?1) ORDER BY d.id",
            (sink,),
        )
        return [_dead_letter(row) for row in rows]

    async def requeue(
        self, ids: Sequence[int] | None = None, *, sink: str | None = None, now: float
    ) -> int:
        """Make dead rows pending again, due at ``now`` with no attempts; return how many.

        ``ids=None`` means every dead row (of ``sink`` when given).
        """
        with self._db.transaction() as conn:
            changed = 0
            for where, params in _selection(ids, sink, state="dead"):
                # ``where`` holds fixed text and "?" placeholders only.
                update = f"UPDATE deliveries SET {_REQUEUED} WHERE {where}"  # noqa: S608
                cursor = conn.execute(update, (now, *params))
                changed += cursor.rowcount
        return changed

    async def purge(self, ids: Sequence[int] | None = None, *, sink: str | None = None) -> int:
        """Delete dead rows; an event left without any stays done now if it has attempts."""
        now = time.time()
        with self._db.transaction() as conn:
            return sum(
                _delete_where(conn, where, params, done_at=now, untried_go=True)
                for where, params in _selection(ids, sink, state="dead")
            )

    async def failing_sinks(self, sink: str | None = None) -> list[FailingSink]:
        """Return, per sink, its pending deliveries that failed and wait for a retry."""
        # With one MAX() as its only min/max aggregate, SQLite takes the bare columns
        # (last_status, last_error) from the row of MAX(attempts); hence the soonest retry in
        # a subquery of its own.
        rows = self._db.read(
            "SELECT d.sink, COUNT(*), MAX(d.attempts), (SELECT MIN(x.next_attempt_at) "
            "FROM deliveries x WHERE x.sink = d.sink AND x.state = 'pending' AND x.attempts > 0), "
            "d.last_status, d.last_error FROM deliveries d "
            "WHERE d.state = 'pending' AND d.attempts > 0 AND (?1 IS NULL OR d.sink = ?1) "
            "GROUP BY d.sink ORDER BY d.sink",
            (sink,),
        )
        return [
            FailingSink(str(name), int(n), int(most), float(soonest), status, error)
            for name, n, most, soonest, status, error in rows
        ]

    async def pending_count(self, sink: str | None = None) -> int:
        rows = self._db.read(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND (?1 IS NULL OR sink = ?1)",
            (sink,),
        )
        return int(rows[0][0])

    async def oldest_pending_enqueued_at(self) -> float | None:
        rows = self._db.read("SELECT MIN(enqueued_at) FROM deliveries WHERE state = 'pending'")
        value = rows[0][0]
        return None if value is None else float(value)

    async def counts_by_sink(self, state: RowState) -> dict[str, int]:
        rows = self._db.read(
            "SELECT sink, COUNT(*) FROM deliveries WHERE state = ? GROUP BY sink ORDER BY sink",
            (state,),
        )
        return {str(sink): int(n) for sink, n in rows}


def enqueue(
    conn: sqlite3.Connection, events: Sequence[tuple[Event, Sequence[str]]], now: float
) -> None:
    """Store each event once and one pending row per sink; a re-detected event adds nothing.

    A new event takes the next ``seq``; a kept event that is done and detected again (its
    session was pruned and came back) gets its rows, and is no longer done.
    """
    event_rows, queued = outbox_rows(events, now)
    delivery_rows = [(event.id, sink, event.session_sid, now, now) for event, sink in queued]
    # ON CONFLICT DO NOTHING (not INSERT OR IGNORE) so that only a duplicate is skipped and
    # any other constraint failure aborts the whole commit.
    # seq: MAX() reads the last entry of the unique index on it.
    stored = conn.executemany(
        "INSERT INTO events (id, service_sid, session_sid, body, type, created_at, seq) "
        "VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events)) "
        "ON CONFLICT (id) DO NOTHING",
        event_rows,
    ).rowcount
    conn.executemany(
        "INSERT INTO deliveries (event_id, sink, session_sid, enqueued_at, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id, sink) DO NOTHING",
        delivery_rows,
    )
    if stored < len(event_rows):  # some were there already: rare, so checked only then
        conn.executemany(
            "UPDATE events SET done_at = NULL WHERE id = ?1 AND done_at IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1)",
            [(row[0],) for row in event_rows],
        )


def shift_pending(conn: sqlite3.Connection, seconds: float) -> int:
    """Move every pending row's times by ``seconds`` (a step of the wall clock).

    Due times and enqueue times alike: what waited keeps waiting what was left of its wait,
    and what was young stays young (ages, ``max_age_seconds``). Returns the rows moved.
    """
    return conn.execute(
        "UPDATE deliveries SET next_attempt_at = next_attempt_at + ?1, "
        "enqueued_at = enqueued_at + ?1 WHERE state = 'pending'",
        (seconds,),
    ).rowcount


def _delete_where(
    conn: sqlite3.Connection,
    where: str,
    params: Sequence[Any],
    *,
    done_at: float | None = None,
    untried_go: bool = False,
) -> int:
    """Delete the deliveries matching ``where``, then settle the events left without any.

    ``done_at`` None: such an event goes (its attempts with it). Otherwise it stays, done at
    ``done_at``, unless ``untried_go`` and it has no attempt kept.
    """
    # ``where`` is built here from fixed text and "?" placeholders only.
    select = f"SELECT DISTINCT event_id FROM deliveries WHERE {where}"  # noqa: S608
    event_ids = [(str(row[0]),) for row in conn.execute(select, params)]
    delete = f"DELETE FROM deliveries WHERE {where}"  # noqa: S608
    deleted = conn.execute(delete, params).rowcount
    if done_at is None:
        conn.executemany(_FORGET, event_ids)
        return deleted
    if untried_go:
        conn.executemany(f"{_FORGET} {_UNTRIED}", event_ids)
    conn.executemany(_DONE, [(event_id, done_at) for (event_id,) in event_ids])
    return deleted


# An event (?1) that no delivery needs any more: forgotten (its attempts cascade), or done.
_UNNEEDED = "id = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1)"
_FORGET = f"DELETE FROM events WHERE {_UNNEEDED}"  # noqa: S608 (constants only)
_UNTRIED = "AND NOT EXISTS (SELECT 1 FROM attempts WHERE event_id = ?1)"
_DONE = f"UPDATE events SET done_at = ?2 WHERE {_UNNEEDED}"  # noqa: S608 (constants only)


def _selection(
    ids: Sequence[int] | None, sink: str | None, *, state: str
) -> Iterator[tuple[str, Sequence[Any]]]:
    """Yield (``WHERE`` clause, parameters) pairs covering the chosen rows in chunks."""
    clause = "state = ?" if sink is None else "state = ? AND sink = ?"
    params: tuple[Any, ...] = (state,) if sink is None else (state, sink)
    if ids is None:
        yield clause, params
        return
    for chunk in _chunks(ids):
        yield f"{clause} AND id IN ({_marks(chunk)})", (*params, *chunk)


def _marks(chunk: Sequence[Any]) -> str:
    return ", ".join("?" * len(chunk))


def _chunks(ids: Sequence[Any]) -> Iterator[list[Any]]:
    items = list(ids)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=int(row["id"]),
        sink=str(row["sink"]),
        event=Event.from_json(row["body"]),
        attempts=int(row["attempts"]),
        enqueued_at=float(row["enqueued_at"]),
        next_attempt_at=float(row["next_attempt_at"]),
        last_error=row["last_error"],
        last_status=row["last_status"],
    )


def _dead_letter(row: sqlite3.Row) -> DeadLetter:
    return DeadLetter.of(_delivery(row), float(row["dead_at"]))


def _disabled_sink(row: sqlite3.Row) -> DisabledSink:
    return DisabledSink(
        sink=str(row["sink"]),
        since=float(row["since"]),
        last_at=float(row["last_at"]),
        status=None if row["status"] is None else int(row["status"]),
        reason=str(row["reason"]),
    )
