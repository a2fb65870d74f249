"""The session side in PostgreSQL: watches, sessions, known interactions, threads, pacing.

A write for a Service is fenced (``fence.py``): made in one transaction that first checks this
replica still holds the Service's lease at its epoch, or not made at all (``FencedError``).
Fenced: ``begin_watch``, ``ensure_session`` (when it writes), ``commit_poll``,
``commit_unchanged``, ``record_failure`` and ``set_thread_ts`` (the session's Service). The
config's and the operator's writes (``end_watch``, ``mark_session_gone``, ``revive_session``,
``prune``, ``set_sink_pace``) are not. A store opened without a fence (an operator's command)
checks nothing.

A write that is one statement runs on its own (autocommit: the statement is its transaction),
one round trip. A poll's success (``commit_unchanged``, the most frequent write, and the first
statement of ``commit_poll``) carries its lease check inside the statement that writes the
session row (``session_rows.success_sql``): a round trip less than ``fence.check``.

Lists are ordered by ``COLLATE "C"``: by SID byte for byte, as in SQLite, whatever the
database's collation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.rows import TupleRow

from poller.events import Event
from poller.state.base import SessionStore
from poller.state.models import SessionState, StoredSession, short_error
from poller.state.postgres import session_rows as rows
from poller.state.postgres.db import Cursor, Database
from poller.state.postgres.enqueue import enqueue
from poller.state.postgres.fence import Fence, check
from poller.twilio.records import Fingerprint, SessionFingerprint


class PgSessions(SessionStore):
    """``SessionStore`` on the ``Database`` ``_db``; writes for a Service are fenced."""

    _db: Database
    _fence: Fence | None

    async def _statement(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[TupleRow]:
        """Run one statement on its own (its own transaction) and return its rows."""
        return await self._db.read(sql, params)

    # watches

    async def watch_begun(self, service_sid: str) -> float | None:
        """Return when watching ``service_sid`` began, or None if it never did."""
        found = await self._db.read(
            "SELECT started_at FROM watches WHERE service_sid = %s", (service_sid,)
        )
        return float(found[0][0]) if found else None

    async def watched_services(self) -> list[str]:
        """Return the Services whose ``all_sessions`` watch has begun."""
        found = await self._db.read(
            'SELECT service_sid FROM watches ORDER BY service_sid COLLATE "C"'
        )
        return [str(row[0]) for row in found]

    async def end_watch(self, service_sid: str) -> None:
        """Forget when watching ``service_sid`` began (watching it again begins anew)."""
        await self._statement("DELETE FROM watches WHERE service_sid = %s", (service_sid,))

    async def begin_watch(
        self,
        service_sid: str,
        session_sids: Sequence[str],
        now: float,
        *,
        listed: Mapping[str, tuple[str, str | None]] | None = None,
        fingerprints: Mapping[str, SessionFingerprint] | None = None,
    ) -> float:
        """Record that the watch began with these sessions (to baseline), in ONE transaction.

        Only the first call records anything; every call returns when the watch began. Fenced:
        only the Service's owner begins its watch.
        """
        shown = listed or {}
        async with self._db.transaction() as cur:
            await check(cur, self._fence, [service_sid])
            await cur.execute(
                "INSERT INTO watches (service_sid, started_at) VALUES (%s, %s) "
                "ON CONFLICT (service_sid) DO NOTHING",
                (service_sid, now),
            )
            if cur.rowcount:
                await _insert_watched(cur, service_sid, session_sids, shown, now)
                await rows.write_fingerprints(cur, (fingerprints or {}).items(), now)
            await cur.execute(
                "SELECT started_at FROM watches WHERE service_sid = %s", (service_sid,)
            )
            row = await cur.fetchone()
        assert row is not None  # inserted or found, in this transaction
        return float(row[0])

    # sessions

    async def sessions(self, service_sid: str | None = None) -> list[SessionState]:
        """Return every stored session (of one Service), gone ones included, by SID."""
        if service_sid is None:
            found = await self._db.read(rows.ALL_SESSIONS)
        else:
            found = await self._db.read(rows.SESSIONS_OF, (service_sid,))
        return [rows.session_state(row) for row in found]

    async def baseline_counts(self, service_sid: str | None = None) -> tuple[int, int]:
        """Return (baselined, not yet baselined) of the watched sessions (of one Service)."""
        found = await self._db.read(
            "SELECT COUNT(*) FILTER (WHERE baselined), COUNT(*) FILTER (WHERE NOT baselined) "
            "FROM sessions WHERE gone_at IS NULL AND (%(s)s::text IS NULL OR service_sid = %(s)s)",
            {"s": service_sid},
        )
        return int(found[0][0]), int(found[0][1])

    async def watched_count(self) -> int:
        """Return how many stored sessions are watched (not gone)."""
        found = await self._db.read("SELECT COUNT(*) FROM sessions WHERE gone_at IS NULL")
        return int(found[0][0])

    async def ensure_session(
        self, service_sid: str, session_sid: str, *, new_traffic: bool, now: float
    ) -> SessionState:
        """Track a session (``new_traffic`` counts only when it is new); revive a gone one.

        Reading is enough for a tracked, watched session (every poll starts here); tracking or
        reviving one is fenced.
        """
        found = await self._db.read(rows.SESSION_BY_SID, (session_sid,))
        if found and found[0][rows.GONE_AT] is None:
            return rows.session_state(found[0])
        async with self._db.transaction() as cur:
            await check(cur, self._fence, [service_sid])
            await cur.execute(rows.ENSURE_SQL, (service_sid, session_sid, new_traffic, now))
            row = await cur.fetchone()
        assert row is not None  # INSERT ... ON CONFLICT DO UPDATE returns the row either way
        return rows.session_state(row)

    async def known(self, session_sid: str) -> dict[str, Fingerprint]:
        """Return the fingerprint of every interaction known in the session, by SID."""
        return rows.known_set(await self._db.read(rows.KNOWN_SQL, (session_sid,)))

    async def session_fingerprint(self, session_sid: str) -> StoredSession | None:
        """Return the session's stored fingerprint (None: its record was never seen)."""
        return rows.stored_session(await self._db.read(rows.FINGERPRINT_SQL, (session_sid,)))

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
        """Record one successful poll in ONE transaction: known set, session row and outbox.

        Fenced: the session row's statement checks the lease first. The known set becomes
        ``known | fetched`` (one statement: only the rows that differ from ``known`` when it is
        given); each event goes to the outbox (``enqueue``).
        """
        params = rows.success_params(
            service_sid,
            session_sid,
            now,
            activity_marker,
            status,
            unsettled_until,
            session_fingerprint,
        )
        sql, params = self._fenced_success(params)
        async with self._db.transaction() as cur:
            await cur.execute(sql, params)
            self._written(await cur.fetchall(), service_sid)
            await rows.write_known(cur, session_sid, fetched, known)
            await enqueue(cur, events, now)

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
        """Record a successful poll that found exactly the known set, in ONE statement.

        The session row (and the fingerprint when given) and, when fenced, the lease check:
        one round trip.
        """
        params = rows.success_params(
            service_sid,
            session_sid,
            now,
            activity_marker,
            status,
            unsettled_until,
            session_fingerprint,
        )
        sql, params = self._fenced_success(params)
        self._written(await self._statement(sql, params), service_sid)

    def _fenced_success(self, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The statement of a poll's success, with its lease check when the store is fenced.

        Raises FencedError at once when this replica no longer trusts its lease.
        """
        if self._fence is None:
            return rows.SUCCESS_SQL, params
        epoch = self._fence.epoch(params["service"])
        if epoch is None:
            raise rows.fenced_error(self._fence, params["service"])
        return rows.FENCED_SUCCESS_SQL, {**params, "replica": self._fence.replica, "epoch": epoch}

    def _written(self, found: list[TupleRow], service_sid: str) -> None:
        """Raise FencedError unless the success statement wrote its session row."""
        if self._fence is not None and not found[0][0]:
            raise rows.fenced_error(self._fence, service_sid)

    async def record_failure(self, session_sid: str, error: str, now: float) -> None:
        """Count one more failed poll in a row and keep a short form of ``error``.

        Fenced by the session's Service; a session the store does not know is ignored.
        """
        update = (
            "UPDATE sessions SET consecutive_failures = consecutive_failures + 1, "
            "last_error = %s, last_failure_at = %s WHERE session_sid = %s"
        )
        params = (short_error(error), now, session_sid)
        if self._fence is None:
            await self._statement(update, params)
            return
        async with self._db.transaction() as cur:
            service_sid = await _service_of(cur, session_sid)
            if service_sid is None:
                return
            await check(cur, self._fence, [service_sid])
            await cur.execute(update, params)

    async def revive_session(self, session_sid: str) -> None:
        """Watch a gone session again (it is polled; a 404 marks it gone again)."""
        await self._statement(
            "UPDATE sessions SET gone_at = NULL WHERE session_sid = %s", (session_sid,)
        )

    async def mark_session_gone(self, session_sid: str, now: float) -> None:
        """Note that the session is closed, deleted or unwatched (the first ``now`` counts)."""
        await self._statement(
            "UPDATE sessions SET gone_at = COALESCE(gone_at, %s) WHERE session_sid = %s",
            (now, session_sid),
        )

    async def prune(self, now: float, grace_seconds: float) -> int:
        """Forget sessions gone longer than ``grace_seconds`` with nothing left to deliver.

        ONE statement; interactions and fingerprints go with their session (ON DELETE CASCADE),
        Slack threads with it here.
        """
        [(pruned,)] = await self._statement(
            "WITH pruned AS (DELETE FROM sessions s WHERE gone_at < %s AND NOT EXISTS ("
            "SELECT 1 FROM deliveries d "
            "WHERE d.session_sid = s.session_sid AND d.state = 'pending') "
            "RETURNING session_sid), "
            "threads AS (DELETE FROM slack_threads "
            "WHERE session_sid IN (SELECT session_sid FROM pruned)) "
            "SELECT count(*) FROM pruned",
            (now - grace_seconds,),
        )
        return int(pruned)

    # Slack threads (Web API mode)

    async def thread_ts(self, sink: str, session_sid: str) -> str | None:
        """Return the ``ts`` of the thread ``sink`` keeps for the session, if any."""
        found = await self._db.read(
            "SELECT ts FROM slack_threads WHERE sink = %s AND session_sid = %s",
            (sink, session_sid),
        )
        return str(found[0][0]) if found else None

    async def set_thread_ts(self, sink: str, session_sid: str, ts: str) -> None:
        """Remember (or replace) the thread ``sink`` keeps for the session.

        Fenced by the session's Service. A session the store does not know (never tracked, or
        pruned) is owned by no one: its thread is written unchecked, as no replica can lose it.
        """
        upsert = (
            "INSERT INTO slack_threads (sink, session_sid, ts) VALUES (%s, %s, %s) "
            "ON CONFLICT (sink, session_sid) DO UPDATE SET ts = excluded.ts"
        )
        if self._fence is None:
            await self._statement(upsert, (sink, session_sid, ts))
            return
        async with self._db.transaction() as cur:
            service_sid = await _service_of(cur, session_sid)
            if service_sid is not None:
                await check(cur, self._fence, [service_sid])
            await cur.execute(upsert, (sink, session_sid, ts))

    # sink pacing (kept across runs: ``poller once`` from cron)

    async def sink_pace(self, sink: str) -> tuple[float, float] | None:
        """Return ``(not_before, set_at)``: no post of ``sink`` before ``not_before``."""
        found = await self._db.read(
            "SELECT not_before, set_at FROM sink_pacing WHERE sink = %s", (sink,)
        )
        return (float(found[0][0]), float(found[0][1])) if found else None

    async def set_sink_pace(self, sink: str, *, not_before: float, now: float) -> None:
        """Record that ``sink`` must not post before ``not_before`` (decided at ``now``)."""
        await self._statement(
            "INSERT INTO sink_pacing (sink, not_before, set_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (sink) DO UPDATE SET "
            "not_before = excluded.not_before, set_at = excluded.set_at",
            (sink, not_before, now),
        )


async def _insert_watched(
    cur: Cursor,
    service_sid: str,
    session_sids: Sequence[str],
    shown: Mapping[str, tuple[str, str | None]],
    now: float,
) -> None:
    """The sessions a watch began with, in one statement; a tracked one is left as it is."""
    if not session_sids:
        return
    await cur.execute(
        "INSERT INTO sessions (service_sid, session_sid, new_traffic, added_at, "
        "activity_marker, watch_last_interaction, watch_listed) "
        "SELECT %s::text, u.sid, false, %s::float8, u.marker, u.last, u.listed "
        "FROM unnest(%s::text[], %s::text[], %s::text[], %s::boolean[]) "
        "AS u (sid, marker, last, listed) ON CONFLICT (session_sid) DO NOTHING",
        (
            service_sid,
            now,
            list(session_sids),
            [shown.get(sid, (None, None))[0] for sid in session_sids],
            [shown.get(sid, (None, None))[1] for sid in session_sids],
            [sid in shown for sid in session_sids],
        ),
    )


async def _service_of(cur: Cursor, session_sid: str) -> str | None:
    """The Service a stored session belongs to (None: the store does not know it)."""
    await cur.execute("SELECT service_sid FROM sessions WHERE session_sid = %s", (session_sid,))
    row = await cur.fetchone()
    return None if row is None else str(row[0])
