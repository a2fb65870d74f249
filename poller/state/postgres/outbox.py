"""The outbox in PostgreSQL: one row per (event, sink), queues per (sink, session).

Each (sink, session) pair is a queue delivered strictly in id order; ``queues.py`` finds the
heads. With a fence (a daemon's store), only the owned Services' rows are handed out or moved,
and a write for a row (ack, retry, dead letter) checks in its own transaction that this
replica still holds the row's Service at its epoch. An operator's store (no fence) sees and
changes every row; its writes (requeue, purge, the sinks' bookkeeping) are never fenced.

Every call is one transaction (or one statement). A row a write depends on is locked before it
is read (``FOR UPDATE``), so an operator's requeue or purge beside a running daemon is either
wholly before or wholly after the daemon's write.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from poller.events import Event
from poller.state.base import Outbox, RowState
from poller.state.history import Attempt
from poller.state.models import DeadLetter, Delivery, FailingSink, short_error
from poller.state.postgres import queues
from poller.state.postgres.attempts import keep_acked, keep_of_rows, services_of
from poller.state.postgres.db import Cursor, Database
from poller.state.postgres.disabled import PgDisabledSinks
from poller.state.postgres.fence import Fence, check, owned_sids

_GONE_SINK = "the sink is no longer configured"
# The dead rows chosen: ``ids`` None means every one (of ``sink`` when given).
_DEAD_CHOSEN = (
    "state = 'dead' AND (%(sink)s::text IS NULL OR sink = %(sink)s) "
    "AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))"
)
# Fixed text only, hence the S608 exceptions.
_REQUEUE = (
    "UPDATE deliveries SET state = 'pending', attempts = 0, dead_at = NULL, "  # noqa: S608
    "next_attempt_at = %(now)s WHERE " + _DEAD_CHOSEN
)
# An outbox write that may leave an event without rows (an ack, a purge) first locks the
# event, in id order: two of them at once (two sinks acking the same event, a purge beside an
# ack) take turns, and the second, in statements of its own after the wait, sees the rows the
# first deleted, so one of them finds the event bare; a replay (``history.py``) takes the same
# lock, so an ack then sees the row it added. The fence reads the Services from the same rows.
_LOCK_EVENTS_OF_ROWS = (
    "SELECT e.service_sid FROM events e WHERE e.id IN "
    "(SELECT d.event_id FROM deliveries d WHERE d.id = ANY(%s::bigint[])) "
    "ORDER BY e.id FOR NO KEY UPDATE OF e"
)
_LOCK_EVENTS_OF_DEAD = (
    "SELECT e.id FROM events e WHERE e.id IN "  # noqa: S608 (fixed text)
    "(SELECT event_id FROM deliveries WHERE " + _DEAD_CHOSEN + ") "
    "ORDER BY e.id FOR NO KEY UPDATE OF e"
)
# Only the rows of events locked: one dead-lettered since is left to the next purge.
_PURGED = _DEAD_CHOSEN + " AND event_id = ANY(%(events)s::text[])"
_PURGE = "DELETE FROM deliveries WHERE " + _PURGED + " RETURNING event_id"  # noqa: S608
_ORPHANS = (
    "DELETE FROM events e WHERE e.id = ANY(%s::text[]) "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)"
)
_ORPHANS_KEEPING_TRIED = """
WITH bare AS (
    SELECT e.id, EXISTS (SELECT 1 FROM attempts a WHERE a.event_id = e.id) AS tried
    FROM events e WHERE e.id = ANY(%(ids)s::text[])
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
), done AS (
    UPDATE events e SET done_at = %(done_at)s FROM bare b WHERE e.id = b.id AND b.tried
)
DELETE FROM events e USING bare b WHERE e.id = b.id AND NOT b.tried"""
_ACK = (
    "DELETE FROM deliveries WHERE id = ANY(%s::bigint[]) "
    "RETURNING id, event_id, sink, service_sid, session_sid"
)


class PgOutbox(PgDisabledSinks, Outbox):
    """``Outbox`` on the ``Database`` ``_db``; only the owned Services' rows are handed out."""

    _db: Database
    _fence: Fence | None

    def _owned(self) -> list[str] | None:
        """The Services this store may hand out (None: every one, an operator's store)."""
        return owned_sids(self._fence)

    async def due(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        """Return up to ``limit`` deliveries of ``sink`` ready now, in enqueue order.

        Only the first pending row of each session's queue can be due (its ``next_attempt_at``
        <= ``now``; ``now=None`` ignores timers). Dead rows never block a queue. With a fence,
        only the owned Services' queues.
        """
        return await self._heads(sink, now, limit, whole_queues=False)

    async def backlog(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        """Return up to ``limit`` pending deliveries of ``sink``, whole queues, in enqueue order.

        Every pending row of each session whose queue head is due (``now=None``: all), for
        sinks that send a backlog as one digest. With a fence, only the owned Services' queues.
        """
        return await self._heads(sink, now, limit, whole_queues=True)

    async def _heads(
        self, sink: str, now: float | None, limit: int, *, whole_queues: bool
    ) -> list[Delivery]:
        owned = self._owned()
        if limit <= 0 or owned == []:
            return []
        sql = queues.heads_query(owned=owned is not None, whole_queues=whole_queues)
        params = {"sink": sink, "now": now, "limit": limit, "owned": owned}
        return [_delivery(row) for row in await self._db.read(sql, params)]

    async def ack(
        self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
    ) -> None:
        """Delete delivered rows; ONE transaction.

        ``history`` None: each event no other row still needs is deleted with them. Otherwise
        the attempts are kept and such an event stays, done (``attempts.keep_acked``). With a
        fence, raises FencedError (deleting nothing) unless every row's Service is still held.
        Three statements, and the fence's check: as many round trips as before the history.
        """
        ids = list(delivery_ids)
        if not ids:
            return
        async with self._db.transaction() as cur:
            await cur.execute(_LOCK_EVENTS_OF_ROWS, (ids,))
            await check(cur, self._fence, services_of(await cur.fetchall()))
            await cur.execute(_ACK, (ids,))
            gone = await cur.fetchall()
            if history is None:
                await _forget_orphans(cur, [str(row[1]) for row in gone])
            else:
                await keep_acked(cur, gone, history)

    async def retry_later(
        self,
        delivery_id: int,
        *,
        next_attempt_at: float,
        error: str,
        status: int | None,
        attempt: Attempt | None = None,
    ) -> None:
        """Count one failed attempt and hold the row (and its queue) until ``next_attempt_at``.

        A row that is not pending is left as it is. ``attempt``: kept, in the same
        transaction. With a fence, raises FencedError (changing nothing) unless the row's
        Service is still held.
        """
        async with self._db.transaction() as cur:
            if not await self._lock_pending(cur, delivery_id):
                return
            await keep_of_rows(cur, [] if attempt is None else [attempt])
            await cur.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = %s, "
                "last_error = %s, last_status = %s WHERE id = %s AND state = 'pending'",
                (next_attempt_at, short_error(error), status, delivery_id),
            )

    async def dead_letter(
        self,
        delivery_id: int,
        *,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> None:
        """Count one failed attempt and give up: the row stops blocking its queue.

        A row that is not pending is left as it is. ``attempt``: kept, in the same
        transaction. With a fence, raises FencedError (changing nothing) unless the row's
        Service is still held.
        """
        async with self._db.transaction() as cur:
            if not await self._lock_pending(cur, delivery_id):
                return
            await keep_of_rows(cur, [] if attempt is None else [attempt])
            await cur.execute(
                "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, dead_at = %s, "
                "last_error = %s, last_status = %s WHERE id = %s AND state = 'pending'",
                (now, short_error(error), status, delivery_id),
            )

    async def _lock_pending(self, cur: Cursor, delivery_id: int) -> bool:
        """Lock the row if it is pending (and fenced to us); False: leave it as it is."""
        await cur.execute(
            "SELECT service_sid FROM deliveries WHERE id = %s AND state = 'pending' FOR UPDATE",
            (delivery_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return False
        await check(cur, self._fence, [str(row[0])])
        return True

    async def dead_letter_other_sinks(self, sinks: Sequence[str], *, now: float) -> int:
        """Dead-letter what is pending for sinks not in ``sinks``; return how many rows.

        ONE transaction, which also forgets that those sinks were disabled. A sink removed
        from the config can take nothing: its events are kept, visible in ``poller outbox
        list``, and ``poller outbox retry --sink NAME`` requeues them if the sink comes back.
        """
        names = list(sinks)
        async with self._db.transaction() as cur:
            # A sink that is gone is not "disabled" any more: its events are dead letters now.
            await cur.execute("DELETE FROM disabled_sinks WHERE sink <> ALL(%s::text[])", (names,))
            await cur.execute(
                "UPDATE deliveries SET state = 'dead', dead_at = %s, last_error = %s "
                "WHERE state = 'pending' AND sink <> ALL(%s::text[])",
                (now, _GONE_SINK, names),
            )
            return cur.rowcount

    async def dead_letters(self, sink: str | None = None) -> list[DeadLetter]:
        """Return dead-lettered deliveries (of one sink, or all), oldest first."""
        rows = await self._db.read(
            f"SELECT {queues.COLUMNS} FROM deliveries d "  # noqa: S608 (fixed text)
            "JOIN events e ON e.id = d.event_id "
            "WHERE d.state = 'dead' AND (%(sink)s::text IS NULL OR d.sink = %(sink)s) "
            "ORDER BY d.id",
            {"sink": sink},
        )
        return [_dead_letter(row) for row in rows]

    async def requeue(
        self, ids: Sequence[int] | None = None, *, sink: str | None = None, now: float
    ) -> int:
        """Make dead rows pending again, due at ``now`` with no attempts; return how many.

        ``ids=None`` means every dead row (of ``sink`` when given); ONE statement.
        """
        async with self._db.transaction() as cur:
            await cur.execute(_REQUEUE, {"now": now, **_selection(ids, sink)})
            return cur.rowcount

    async def purge(self, ids: Sequence[int] | None = None, *, sink: str | None = None) -> int:
        """Delete dead rows (and the events nothing needs any more); return how many.

        An event left without rows that has kept attempts stays, done now (wall clock).
        """
        async with self._db.transaction() as cur:
            await cur.execute(_LOCK_EVENTS_OF_DEAD, _selection(ids, sink))
            events = [str(row[0]) for row in await cur.fetchall()]
            await cur.execute(_PURGE, {**_selection(ids, sink), "events": events})
            event_ids = [str(row[0]) for row in await cur.fetchall()]
            await _forget_orphans(cur, event_ids, done_at=time.time())
            return len(event_ids)

    async def failing_sinks(self, sink: str | None = None) -> list[FailingSink]:
        """Return, per sink, its pending deliveries that failed and wait for a retry.

        The status and error are the most tried row's (the first of them by id).
        """
        rows = await self._db.read(
            "SELECT DISTINCT ON (sink) sink, count(*) OVER w, max(attempts) OVER w, "
            "min(next_attempt_at) OVER w, last_status, last_error FROM deliveries "
            "WHERE state = 'pending' AND attempts > 0 "
            "AND (%(sink)s::text IS NULL OR sink = %(sink)s) "
            "WINDOW w AS (PARTITION BY sink) ORDER BY sink, attempts DESC, id",
            {"sink": sink},
        )
        return [
            FailingSink(str(name), int(n), int(most), float(soonest), status, error)
            for name, n, most, soonest, status, error in rows
        ]

    # The counts below are this replica's with a fence (its gauges, its readiness, what its
    # ``once`` waits for: the owners of the other Services count theirs), every row without.

    async def pending_count(self, sink: str | None = None) -> int:
        rows = await self._db.read(
            "SELECT count(*) FROM deliveries "
            "WHERE state = 'pending' AND (%(sink)s::text IS NULL OR sink = %(sink)s) AND "
            "(%(owned)s::text[] IS NULL OR service_sid = ANY(%(owned)s::text[]))",
            {"sink": sink, "owned": self._owned()},
        )
        return int(rows[0][0])

    async def oldest_pending_enqueued_at(self) -> float | None:
        rows = await self._db.read(
            "SELECT min(enqueued_at) FROM deliveries WHERE state = 'pending' AND "
            "(%(owned)s::text[] IS NULL OR service_sid = ANY(%(owned)s::text[]))",
            {"owned": self._owned()},
        )
        value = rows[0][0]
        return None if value is None else float(value)

    async def counts_by_sink(self, state: RowState) -> dict[str, int]:
        rows = await self._db.read(
            "SELECT sink, count(*) FROM deliveries WHERE state = %(state)s AND "
            "(%(owned)s::text[] IS NULL OR service_sid = ANY(%(owned)s::text[])) "
            "GROUP BY sink ORDER BY sink",
            {"state": state, "owned": self._owned()},
        )
        return {str(sink): int(n) for sink, n in rows}

    async def shift_due_times(self, seconds: float) -> int:
        """Move every pending row's due and enqueue times by ``seconds`` (a wall-clock step).

        What waited keeps waiting what was left of its wait, and what was young stays young.
        With a fence, only the owned Services' rows (each replica moves its own). Returns the
        rows moved.
        """
        owned = self._owned()
        if owned == []:
            return 0
        async with self._db.transaction() as cur:
            await cur.execute(
                "UPDATE deliveries SET next_attempt_at = next_attempt_at + %(s)s, "
                "enqueued_at = enqueued_at + %(s)s WHERE state = 'pending' "
                "AND (%(owned)s::text[] IS NULL OR service_sid = ANY(%(owned)s::text[]))",
                {"s": seconds, "owned": owned},
            )
            return cur.rowcount


async def _forget_orphans(
    cur: Cursor, event_ids: list[str], *, done_at: float | None = None
) -> None:
    """Delete the events of ``event_ids`` that no delivery needs any more.

    ``done_at``: keep those with kept attempts instead, done then.
    """
    if not event_ids:
        return
    chosen = sorted(set(event_ids))
    if done_at is None:
        await cur.execute(_ORPHANS, (chosen,))
    else:
        await cur.execute(_ORPHANS_KEEPING_TRIED, {"ids": chosen, "done_at": done_at})


def _selection(ids: Sequence[int] | None, sink: str | None) -> dict[str, Any]:
    return {"sink": sink, "ids": None if ids is None else [int(i) for i in ids]}


def _delivery(row: Sequence[Any]) -> Delivery:
    rid, sink, body, attempts, enqueued_at, next_attempt_at, error, status, _dead = row
    return Delivery(
        id=int(rid),
        sink=str(sink),
        event=Event.from_json(body),
        attempts=int(attempts),
        enqueued_at=float(enqueued_at),
        next_attempt_at=float(next_attempt_at),
        last_error=error,
        last_status=status,
    )


def _dead_letter(row: Sequence[Any]) -> DeadLetter:
    return DeadLetter.of(_delivery(row), float(row[-1]))
