"""Putting detected events into the outbox, inside the poll's own transaction."""

from __future__ import annotations

from collections.abc import Sequence

from poller.events import Event
from poller.state.outbox_rows import outbox_rows
from poller.state.postgres.db import Cursor

# A kept event (done, in the history) detected again is pending again, as it was before the
# history kept events: its deliveries are inserted anew below. Only a duplicate is skipped
# (ON CONFLICT), so any other failure aborts the commit.
_EVENTS = (
    "INSERT INTO events (id, service_sid, session_sid, body, type, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (id) DO UPDATE SET done_at = NULL WHERE events.done_at IS NOT NULL"
)
_DELIVERIES = (
    "INSERT INTO deliveries "
    "(event_id, sink, service_sid, session_sid, enqueued_at, next_attempt_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_id, sink) DO NOTHING"
)


async def enqueue(cur: Cursor, events: Sequence[tuple[Event, Sequence[str]]], now: float) -> None:
    """Store each event once and one pending row per sink; a re-detected event adds nothing.

    Rows (and events: ``seq``) are numbered in the order given, so each (sink, session) queue
    keeps the poll's order.
    """
    event_rows, queued = outbox_rows(events, now)
    delivery_rows = [
        (event.id, sink, event.service_sid, event.session_sid, now, now) for event, sink in queued
    ]
    if not event_rows:
        return
    await cur.executemany(_EVENTS, event_rows)
    await cur.executemany(_DELIVERIES, delivery_rows)
