"""Keeping delivery attempts, inside the transaction of the outbox write they go with.

Every statement here is set-based (arrays through ``unnest``), so keeping the attempts of an
ack costs the ack no more round trips than deleting its events did before the history: the
attempts and the events' ``done_at`` are one statement after the rows' delete.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from poller.state.history import Attempt
from poller.state.models import short_error
from poller.state.postgres.db import Cursor

# The attempts given, in their order, as rows: (delivery id, at, latency, outcome, status,
# error, place).
_GIVEN = (
    "unnest(%(delivery)s::bigint[], %(at)s::float8[], %(latency)s::float8[], "
    "%(outcome)s::text[], %(status)s::int[], %(error)s::text[]) "
    "WITH ORDINALITY AS t (delivery, at, latency, outcome, status, error, place)"
)
_COLUMNS = "event_id, sink, service_sid, session_sid, at, latency, outcome, status, error"

# The rows are gone (deleted by the statement before): each attempt takes its row's event,
# sink and owner from the arrays, and each event nothing needs any more is done.
_KEEP_ACKED = f"""
WITH rows AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(events)s::text[], %(sinks)s::text[],
        %(services)s::text[], %(sessions)s::text[]) AS r (id, event_id, sink, service_sid,
        session_sid)
), kept AS (
    INSERT INTO attempts ({_COLUMNS})
    SELECT r.event_id, r.sink, r.service_sid, r.session_sid, t.at, t.latency, t.outcome,
        t.status, t.error
    FROM {_GIVEN} JOIN rows r ON r.id = t.delivery ORDER BY t.place
)
UPDATE events e SET done_at = d.done_at
FROM unnest(%(done_events)s::text[], %(done_at)s::float8[]) AS d (event_id, done_at)
WHERE e.id = d.event_id
AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.event_id = e.id)"""  # noqa: S608 (fixed text)

# Attempts at rows that are still there (record_attempts): each takes its row's event.
_KEEP_OF_ROWS = f"""
INSERT INTO attempts ({_COLUMNS})
SELECT d.event_id, d.sink, d.service_sid, d.session_sid, t.at, t.latency, t.outcome,
    t.status, t.error
FROM {_GIVEN} JOIN deliveries d ON d.id = t.delivery ORDER BY t.place"""  # noqa: S608


def _arrays(attempts: Sequence[Attempt]) -> dict[str, list[Any]]:
    return {
        "delivery": [a.delivery_id for a in attempts],
        "at": [a.at for a in attempts],
        "latency": [a.latency_seconds for a in attempts],
        "outcome": [a.outcome for a in attempts],
        "status": [a.status for a in attempts],
        "error": [None if a.error is None else short_error(a.error) for a in attempts],
    }


async def keep_acked(
    cur: Cursor, gone: Sequence[Sequence[Any]], history: Sequence[Attempt]
) -> None:
    """Keep ``history`` for the rows just deleted and mark done each event they leave bare.

    ``gone``: the deleted rows' (id, event_id, sink, service_sid, session_sid). An event is
    done at the latest ``at`` of its own attempts, else of all of ``history``, else now (an
    ack without any attempt still ends the event's deliveries).
    """
    if not gone:
        return
    ids, events, sinks, services, sessions = (list(column) for column in zip(*gone, strict=True))
    event_of = dict(zip(ids, events, strict=True))
    latest: dict[str, float] = {}
    for attempt in history:
        event = event_of.get(attempt.delivery_id)
        if event is not None:
            latest[event] = max(attempt.at, latest.get(event, attempt.at))
    fallback = max((a.at for a in history), default=time.time())
    done = sorted(set(events))
    await cur.execute(
        _KEEP_ACKED,
        {
            "ids": ids,
            "events": events,
            "sinks": sinks,
            "services": services,
            "sessions": sessions,
            "done_events": done,
            "done_at": [latest.get(event, fallback) for event in done],
            **_arrays(history),
        },
    )


async def keep_of_rows(cur: Cursor, attempts: Sequence[Attempt]) -> None:
    """Keep ``attempts`` at rows that are still there; one at a row that is gone is ignored."""
    if attempts:
        await cur.execute(_KEEP_OF_ROWS, _arrays(attempts))


def services_of(rows: Iterable[Sequence[Any]]) -> list[str]:
    """The distinct Services (first column) of ``rows``, for the fence."""
    return sorted({str(row[0]) for row in rows})
