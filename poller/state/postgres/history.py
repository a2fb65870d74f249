"""The history in PostgreSQL: kept events, their attempts, replay and pruning.

An event stays in ``events`` after its last delivery (``done_at`` set) with its rows of
``attempts``; ``seq`` is its place in the original order. The attempts of an outbox write are
kept by that write (``attempts.py``); this module reads them, queues kept events again and
prunes them.

A replay is an operator's command: without a fence it writes unchecked, as ``requeue`` does.
It first locks the events, as an ack does: a daemon's ack of one of their rows is wholly
before it (the replay then sees the event done) or wholly after it (the ack's statements then
see the new row, and leave the event pending); a prune is wholly before it (the event is gone:
skipped); a prune skips an event a replay holds (then pending again: kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from poller.state.history import Attempt, History
from poller.state.postgres.attempts import keep_of_rows, services_of
from poller.state.postgres.db import Database
from poller.state.postgres.fence import Fence, check, owned_sids
from poller.state.postgres.kept import fold, history_query
from poller.state.views import AttemptRecord, HistoryQuery, KeptEvent

# The lock an ack or a purge takes first (``outbox.py``). Against a prune too: an event pruned
# meanwhile is skipped, not a foreign key error; a prune waiting for the lock finds the event
# pending again (not done: kept).
_LOCK_EVENTS = (
    "SELECT id, service_sid, seq FROM events WHERE id = ANY(%s::text[]) "
    "ORDER BY id FOR NO KEY UPDATE"
)
# Events per statement of a replay: a week of a busy poller's events (a million) replayed at
# once could outlast the statement timeout (100,000 took 6 s here).
REPLAY_BATCH = 5000
# New rows in the events' original order (the identity numbers them as they are inserted);
# one the outbox holds already for the sink is skipped by the unique (event_id, sink).
_REPLAY = """
WITH queued AS (
    INSERT INTO deliveries
        (event_id, sink, service_sid, session_sid, enqueued_at, next_attempt_at)
    SELECT e.id, %(sink)s, e.service_sid, e.session_sid, %(now)s, %(now)s
    FROM events e WHERE e.id = ANY(%(ids)s::text[]) ORDER BY e.seq
    ON CONFLICT (event_id, sink) DO NOTHING
    RETURNING event_id
), undone AS (
    UPDATE events e SET done_at = NULL FROM queued q WHERE e.id = q.event_id
    RETURNING e.id, e.seq
)
SELECT id FROM undone ORDER BY seq"""
# Done before the cutoff with nothing left to deliver, found by created_at (done_at is in no
# index; stamped after the event was stored, it is later but for a clock step back, and then
# the event goes when both are old). An event a replay (or an ack) holds is skipped, left to
# the next prune; the replay makes it pending anyway.
_PRUNE = """
WITH doomed AS (
    SELECT e.id FROM events e
    WHERE e.created_at < %(cutoff)s AND e.done_at < %(cutoff)s
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
    ORDER BY e.created_at LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM events e USING doomed d WHERE e.id = d.id RETURNING 1
)
SELECT count(*) FROM gone"""
# Events per statement of a prune: an hour of a busy poller's events (200,000, with twice as
# many attempts) in one statement could outlast the statement timeout, every hour again.
PRUNE_BATCH = 5000
_RECENT = (
    "SELECT event_id, sink, session_sid, at, latency, outcome, status, error "
    "FROM attempts WHERE sink = %s ORDER BY id DESC LIMIT %s"
)
_OLDEST_PENDING = (
    "SELECT sink, min(enqueued_at) FROM deliveries WHERE state = 'pending' AND "
    "(%(owned)s::text[] IS NULL OR service_sid = ANY(%(owned)s::text[])) "
    "GROUP BY sink ORDER BY sink"
)


class PgHistory(History):
    """``History`` on the ``Database`` ``_db``; a fence's Services only where it counts."""

    _db: Database
    _fence: Fence | None

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Keep attempts whose outcome changes no outbox row; ONE transaction.

        An attempt whose row is gone is ignored. With a fence, raises FencedError (keeping
        none) unless every row's Service is still held.
        """
        if not attempts:
            return
        async with self._db.transaction() as cur:
            if self._fence is not None:
                await cur.execute(
                    "SELECT DISTINCT service_sid FROM deliveries WHERE id = ANY(%s::bigint[])",
                    ([a.delivery_id for a in attempts],),
                )
                await check(cur, self._fence, services_of(await cur.fetchall()))
            await keep_of_rows(cur, attempts)

    async def history(self, query: HistoryQuery) -> list[KeptEvent]:
        """Return the kept events ``query`` selects, in their original order; ONE statement."""
        sql, params = history_query(query)
        return fold(await self._db.read(sql, params))

    async def replay(self, sink: str, event_ids: Sequence[str], *, now: float) -> list[str]:
        """Queue kept events again for ``sink`` in their original order; return the ids queued.

        ONE transaction, ``REPLAY_BATCH`` events per statement: the events are locked in id
        order, then queued in seq order. With a fence, raises FencedError (queuing nothing)
        unless every event's Service is held; without one (an operator), unchecked.
        """
        ids = sorted(set(event_ids))
        queued: list[str] = []
        async with self._db.transaction() as cur:
            kept: list[tuple[int, str, str]] = []  # (seq, id, service)
            for chunk in _chunks(ids):
                await cur.execute(_LOCK_EVENTS, (chunk,))
                kept += [(int(seq), str(eid), str(sid)) for eid, sid, seq in await cur.fetchall()]
            await check(cur, self._fence, {sid for _, _, sid in kept})
            for chunk in _chunks([eid for _, eid, _ in sorted(kept)]):
                await cur.execute(_REPLAY, {"sink": sink, "now": now, "ids": chunk})
                queued += [str(row[0]) for row in await cur.fetchall()]
        return queued

    async def prune_history(self, now: float, keep_seconds: float) -> int:
        """Forget events done over ``keep_seconds`` ago, with their attempts; ONE transaction.

        ``PRUNE_BATCH`` events per statement; the attempts go with their event (ON DELETE
        CASCADE).
        """
        params = {"cutoff": now - keep_seconds, "batch": PRUNE_BATCH}
        pruned = 0
        async with self._db.transaction() as cur:
            while True:
                await cur.execute(_PRUNE, params)
                row = await cur.fetchone()
                batch = 0 if row is None else int(row[0])
                pruned += batch
                if batch < PRUNE_BATCH:
                    return pruned

    async def recent_attempts(self, sink: str, limit: int) -> list[AttemptRecord]:
        """Return the latest ``limit`` kept attempts for ``sink``, the newest first.

        Every replica's: the history is one for all of them.
        """
        if limit <= 0:
            return []
        return [_attempt(row) for row in await self._db.read(_RECENT, (sink, limit))]

    async def oldest_pending_by_sink(self) -> dict[str, float]:
        """Return ``{sink: enqueue time of its oldest pending row}`` (a fence's rows only)."""
        owned = owned_sids(self._fence)
        if owned == []:
            return {}
        rows = await self._db.read(_OLDEST_PENDING, {"owned": owned})
        return {str(sink): float(oldest) for sink, oldest in rows}

    async def kept_events(self) -> int:
        """Return how many events the state keeps (pending, dead and done alike)."""
        return int((await self._db.read("SELECT count(*) FROM events"))[0][0])


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[n : n + REPLAY_BATCH] for n in range(0, len(ids), REPLAY_BATCH)]


def _attempt(row: Sequence[Any]) -> AttemptRecord:
    event_id, sink, session_sid, at, latency, outcome, status, error = row
    return AttemptRecord(
        event_id=str(event_id),
        sink=str(sink),
        session_sid=str(session_sid),
        at=float(at),
        latency_seconds=float(latency),
        outcome=outcome,
        status=None if status is None else int(status),
        error=None if error is None else str(error),
    )
