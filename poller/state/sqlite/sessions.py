"""SQLite's session side: watches, sessions, the interactions known in each, threads, pacing.

Everything a poll changes is committed in one transaction, so after a crash the known set and
the outbox always agree: an event is either not yet detected, or waiting for every sink.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from poller.events import Event
from poller.state.base import SessionStore
from poller.state.models import SessionState, StoredSession, short_error
from poller.state.sqlite.db import Database
from poller.state.sqlite.outbox import enqueue
from poller.state.sqlite.session_records import read_fingerprint, write_fingerprint
from poller.twilio.records import Fingerprint, SessionFingerprint


class SqliteSessions(SessionStore):
    """The session half of ``SqliteStore`` (see ``poller.state.base.SessionStore``)."""

    _db: Database
    # The rows and states of the last ``sessions()`` of each scope (a Service, or None: all).
    _last_states: dict[str | None, dict[str, tuple[tuple[Any, ...], SessionState]]]

    # watches

    async def watch_begun(self, service_sid: str) -> float | None:
        """Return when watching ``service_sid`` began, or None if it never did."""
        rows = self._db.read("SELECT started_at FROM watches WHERE service_sid = ?", (service_sid,))
        return float(rows[0][0]) if rows else None

    async def watched_services(self) -> list[str]:
        """Return the Services whose ``all_sessions`` watch has begun."""
        return [str(row[0]) for row in self._db.read("SELECT service_sid FROM watches")]

    async def end_watch(self, service_sid: str) -> None:
        """Forget when watching ``service_sid`` began (watching it again begins anew)."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM watches WHERE service_sid = ?", (service_sid,))

    async def begin_watch(
        self,
        service_sid: str,
        session_sids: Sequence[str],
        now: float,
        *,
        listed: Mapping[str, tuple[str, str | None]] | None = None,
        fingerprints: Mapping[str, SessionFingerprint] | None = None,
    ) -> float:
        """Record that the watch began with these sessions (to baseline), in one transaction.

        What a Service held when its watch began is "what already exists": those sessions are
        baselined, whatever the clocks say. ``listed``: what the listing showed of each
        session, ``(activity marker, date_last_interaction)``; the marker tells activity
        before the baseline, the date splits the baseline from the events (see
        ``SessionState.watch_last_interaction``). ``fingerprints``: each listed Session's own
        fingerprint, what its session events compare with, however late its baseline comes.
        Returns when the watch began (the first call's ``now``; later calls change nothing).
        """
        shown = listed or {}
        with self._db.transaction() as conn:
            inserted = conn.execute(
                "INSERT INTO watches (service_sid, started_at) VALUES (?, ?) "
                "ON CONFLICT (service_sid) DO NOTHING",
                (service_sid, now),
            ).rowcount
            if inserted:
                conn.executemany(
                    "INSERT INTO sessions (service_sid, session_sid, new_traffic, added_at, "
                    "activity_marker, watch_last_interaction, watch_listed) "
                    "VALUES (?, ?, 0, ?, ?, ?, ?) ON CONFLICT (session_sid) DO NOTHING",
                    [
                        (service_sid, sid, now, *shown.get(sid, (None, None)), int(sid in shown))
                        for sid in session_sids
                    ],
                )
                for sid, fingerprint in (fingerprints or {}).items():
                    write_fingerprint(conn, sid, fingerprint, now)
            row = conn.execute(
                "SELECT started_at FROM watches WHERE service_sid = ?", (service_sid,)
            ).fetchone()
        return float(row[0])

    # sessions

    async def sessions(self, service_sid: str | None = None) -> list[SessionState]:
        """Return every stored session (of one Service), gone ones included, by SID."""
        # Every cycle reads all of a Service's sessions: plain tuples in the fields' order
        # (sqlite3.Row's lookups by name cost more than the query itself).
        try:
            cursor = self._db.conn.cursor()
            cursor.row_factory = None
            cursor.execute(_SELECT_STATES, (service_sid,))
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            raise self._db.error(exc) from exc
        # A row unchanged since the last read gives the same (frozen) state again.
        last = self._last_states.get(service_sid, {})
        states: dict[str, tuple[tuple[Any, ...], SessionState]] = {}
        for row in rows:
            seen = last.get(row[1])
            states[row[1]] = seen if seen is not None and seen[0] == row else (row, _state(row))
        self._last_states[service_sid] = states
        return [state for _, state in states.values()]

    async def baseline_counts(self, service_sid: str | None = None) -> tuple[int, int]:
        """Return (baselined, not yet baselined) of the watched sessions (of one Service)."""
        rows = self._db.read(
            "SELECT COUNT(*) FILTER (WHERE baselined), COUNT(*) FILTER (WHERE NOT baselined) "
            "FROM sessions WHERE gone_at IS NULL AND (?1 IS NULL OR service_sid = ?1)",
            (service_sid,),
        )
        return int(rows[0][0]), int(rows[0][1])

    async def watched_count(self) -> int:
        """Return how many stored sessions are watched (not gone)."""
        rows = self._db.read("SELECT COUNT(*) FROM sessions WHERE gone_at IS NULL")
        return int(rows[0][0])

    async def ensure_session(
        self, service_sid: str, session_sid: str, *, new_traffic: bool, now: float
    ) -> SessionState:
        """Track a session (``new_traffic`` counts only when it is new); revive a gone one."""
        # Every poll starts here: a watched session that is already tracked needs no write.
        rows = self._db.read(_SELECT_STATE, (session_sid,))
        if rows and rows[0]["gone_at"] is None:
            return _state(tuple(rows[0]))
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO sessions (service_sid, session_sid, new_traffic, added_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (session_sid) DO UPDATE SET gone_at = NULL",
                (service_sid, session_sid, int(new_traffic), now),
            )
            row = conn.execute(_SELECT_STATE, (session_sid,)).fetchone()
        return _state(tuple(row))

    async def known(self, session_sid: str) -> dict[str, Fingerprint]:
        """Return the fingerprint of every interaction known in the session, by SID."""
        try:
            return _known(self._db.conn, session_sid)
        except sqlite3.Error as exc:
            raise self._db.error(exc) from exc

    async def session_fingerprint(self, session_sid: str) -> StoredSession | None:
        """Return the session's stored fingerprint (None: its record was never seen)."""
        try:
            return read_fingerprint(self._db.conn, session_sid)
        except sqlite3.Error as exc:
            raise self._db.error(exc) from exc

    async def commit_poll(
        self,
        service_sid: str,
        session_sid: str,
        *,
        fetched: Mapping[str, Fingerprint],
        events: Sequence[tuple[Event, Sequence[str]]],
        now: float,
        activity_marker: str | None = None,
        status: str | None = None,
        unsettled_until: float | None = None,
        known: Mapping[str, Fingerprint] | None = None,
        session_fingerprint: SessionFingerprint | None = None,
    ) -> None:
        """Record one successful poll in ONE transaction.

        The known set becomes the known set updated with ``fetched`` (``known | fetched``, the
        fetched fingerprint winning; only the rows that changed are written): an interaction a
        listing lacked stays known, so when it comes back it is an update, never new again. A
        session's known set shrinks only when the session is pruned (:meth:`prune`). The
        session is baselined with no failures and ``last_success_at = now``, its
        ``activity_marker``, ``status`` and ``unsettled_until`` become the values given, and
        each event is stored with one outbox row per sink it goes to. Events already in the
        outbox (re-detected after a crash) are not added twice.

        ``known``: the known set as :meth:`known` returned it for this poll, so it is not
        read again (the store has one writer, and one session is never polled twice at once);
        None reads it inside the transaction. ``session_fingerprint``: the Session record's
        fingerprint as this poll saw it, stored (read at ``now``) when given.
        """
        with self._db.transaction() as conn:
            _record_success(
                conn, service_sid, session_sid, now, activity_marker, status, unsettled_until
            )
            stored = _known(conn, session_sid) if known is None else known
            _write_delta(conn, session_sid, stored, fetched)
            if session_fingerprint is not None:
                write_fingerprint(conn, session_sid, session_fingerprint, now)
            enqueue(conn, events, now)

    async def commit_unchanged(
        self,
        service_sid: str,
        session_sid: str,
        *,
        now: float,
        activity_marker: str | None = None,
        status: str | None = None,
        unsettled_until: float | None = None,
        session_fingerprint: SessionFingerprint | None = None,
    ) -> None:
        """Record a successful poll that found exactly the known set: the session row only.

        The same as :meth:`commit_poll` with ``fetched`` equal to the known set and no
        events, without reading or comparing the interactions.
        """
        with self._db.transaction() as conn:
            _record_success(
                conn, service_sid, session_sid, now, activity_marker, status, unsettled_until
            )
            if session_fingerprint is not None:
                write_fingerprint(conn, session_sid, session_fingerprint, now)

    async def record_failure(self, session_sid: str, error: str, now: float) -> None:
        """Count one more failed poll in a row and keep a short form of ``error``.

        ``error`` is ``str(exc)`` of a poller error (which never holds a secret); a session the
        store does not know is ignored.
        """
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE sessions SET consecutive_failures = consecutive_failures + 1, "
                "last_error = ?, last_failure_at = ? WHERE session_sid = ?",
                (short_error(error), now, session_sid),
            )

    async def revive_session(self, session_sid: str) -> None:
        """Watch a gone session again (it is polled; a 404 marks it gone again)."""
        with self._db.transaction() as conn:
            conn.execute("UPDATE sessions SET gone_at = NULL WHERE session_sid = ?", (session_sid,))

    async def mark_session_gone(self, session_sid: str, now: float) -> None:
        """Note that the session is closed, deleted or unwatched (the first time counts)."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE sessions SET gone_at = COALESCE(gone_at, ?) WHERE session_sid = ?",
                (now, session_sid),
            )

    async def prune(self, now: float, grace_seconds: float) -> int:
        """Forget sessions gone longer than ``grace_seconds`` with nothing left to deliver."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT session_sid FROM sessions s WHERE gone_at < ? AND NOT EXISTS ("
                "SELECT 1 FROM deliveries d "
                "WHERE d.session_sid = s.session_sid AND d.state = 'pending')",
                (now - grace_seconds,),
            ).fetchall()
            sids = [(str(row[0]),) for row in rows]
            conn.executemany("DELETE FROM slack_threads WHERE session_sid = ?", sids)
            # interactions go with their session (ON DELETE CASCADE)
            conn.executemany("DELETE FROM sessions WHERE session_sid = ?", sids)
        return len(sids)

    # slack threads (Web API mode)

    async def thread_ts(self, sink: str, session_sid: str) -> str | None:
        rows = self._db.read(
            "SELECT ts FROM slack_threads WHERE sink = ? AND session_sid = ?", (sink, session_sid)
        )
        return str(rows[0][0]) if rows else None

    async def set_thread_ts(self, sink: str, session_sid: str, ts: str) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO slack_threads (sink, session_sid, ts) VALUES (?, ?, ?) "
                "ON CONFLICT (sink, session_sid) DO UPDATE SET ts = excluded.ts",
                (sink, session_sid, ts),
            )

    # sink pacing (kept across runs)

    async def sink_pace(self, sink: str) -> tuple[float, float] | None:
        """Return ``(not_before, set_at)``: no post of ``sink`` before ``not_before``."""
        rows = self._db.read("SELECT not_before, set_at FROM sink_pacing WHERE sink = ?", (sink,))
        return (float(rows[0][0]), float(rows[0][1])) if rows else None

    async def set_sink_pace(self, sink: str, *, not_before: float, now: float) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO sink_pacing (sink, not_before, set_at) VALUES (?, ?, ?) "
                "ON CONFLICT (sink) DO UPDATE SET "
                "not_before = excluded.not_before, set_at = excluded.set_at",
                (sink, not_before, now),
            )


def _record_success(
    conn: sqlite3.Connection,
    service_sid: str,
    session_sid: str,
    now: float,
    activity_marker: str | None,
    status: str | None,
    unsettled_until: float | None,
) -> None:
    conn.execute(
        "INSERT INTO sessions (service_sid, session_sid, baselined, last_success_at, "
        "added_at, activity_marker, status, unsettled_until) "
        "VALUES (?1, ?2, 1, ?3, ?3, ?4, ?5, ?6) ON CONFLICT (session_sid) DO UPDATE SET "
        "baselined = 1, consecutive_failures = 0, last_success_at = ?3, "
        "activity_marker = ?4, status = ?5, unsettled_until = ?6",
        (service_sid, session_sid, now, activity_marker, status, unsettled_until),
    )


def _known(conn: sqlite3.Connection, session_sid: str) -> dict[str, Fingerprint]:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: sqlite3.Row costs more per row
    cursor.execute(
        "SELECT sid, date_updated, inbound_status, outbound_status FROM interactions "
        "WHERE session_sid = ?",
        (session_sid,),
    )
    # tuple.__new__ is Fingerprint(...) without its keyword handling: 50,000 rows a full scan.
    make, kind = tuple.__new__, Fingerprint
    return {
        sid: make(kind, (updated, inbound, outbound)) for sid, updated, inbound, outbound in cursor
    }


def _write_delta(
    conn: sqlite3.Connection,
    session_sid: str,
    stored: Mapping[str, Fingerprint],
    fetched: Mapping[str, Fingerprint],
) -> None:
    """Add ``fetched`` to the stored known set, writing only the rows that differ.

    Nothing is deleted: one listing lacking a known interaction (a short page, a paging
    anomaly) says nothing about it.
    """
    conn.executemany(
        "INSERT INTO interactions "
        "(session_sid, sid, date_updated, inbound_status, outbound_status) VALUES (?, ?, ?, ?, ?)",
        [(session_sid, sid, *fp) for sid, fp in fetched.items() if sid not in stored],
    )
    conn.executemany(
        "UPDATE interactions SET date_updated = ?, inbound_status = ?, outbound_status = ? "
        "WHERE session_sid = ? AND sid = ?",
        [
            (*fp, session_sid, sid)
            for sid, fp in fetched.items()
            if sid in stored and tuple(stored[sid]) != tuple(fp)
        ],
    )


# The columns of a SessionState in the order of its fields (see ``_state``).
_STATE_COLUMNS = (
    "service_sid, session_sid, baselined, new_traffic, last_success_at, "
    "consecutive_failures, last_error, activity_marker, status, unsettled_until, "
    "last_failure_at, gone_at, watch_listed, watch_last_interaction"
)
# Built from constants only (no input reaches the text): hence the two S608 exemptions.
_SELECT_STATES = (
    f"SELECT {_STATE_COLUMNS} FROM sessions "  # noqa: S608
    "WHERE ?1 IS NULL OR service_sid = ?1 ORDER BY session_sid"
)
_SELECT_STATE = f"SELECT {_STATE_COLUMNS} FROM sessions WHERE session_sid = ?"  # noqa: S608


def _state(row: tuple[Any, ...]) -> SessionState:
    """Build from a row of ``_STATE_COLUMNS`` (positional: 5,000 of these per cycle)."""
    (service, sid, baselined, new_traffic, success, failures, error, marker, status, unsettled,
     failure, gone, listed, last_interaction) = row  # fmt: skip
    return SessionState(
        str(service),
        str(sid),
        bool(baselined),
        bool(new_traffic),
        success,
        int(failures),
        error,
        marker,
        status,
        unsettled,
        failure,
        gone,
        bool(listed),
        last_interaction,
    )
