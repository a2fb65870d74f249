"""Putting detected events into the outbox, inside the poll's own transaction."""

from __future__ import annotations

from collections.abc import Sequence

from poller.events import Event
from poller.state.postgres.db import Cursor


async def enqueue(cur: Cursor, events: Sequence[tuple[Event, Sequence[str]]], now: float) -> None:
    """Store each event once and one pending row per sink; a re-detected event adds nothing.

    Rows are numbered in the order given, so each (sink, session) queue keeps the poll's order.
    """
    event_rows: list[tuple[str, str, str, str]] = []
    delivery_rows: list[tuple[str, str, str, str, float, float]] = []
    for event, sinks in events:
        if isinstance(sinks, str):
            raise TypeError(f"sinks of event {event.id} must be a sequence of names, not a str")
        if sinks:
            event_rows.append((event.id, event.service_sid, event.session_sid, event.to_json()))
            delivery_rows += [
                (event.id, sink, event.service_sid, event.session_sid, now, now) for sink in sinks
            ]
    if not event_rows:
        return
    # ON CONFLICT DO NOTHING: only a duplicate is skipped, any other failure aborts the commit.
    await cur.executemany(
        "INSERT INTO events (id, service_sid, session_sid, body) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING",
        event_rows,
    )
    await cur.executemany(
        "INSERT INTO deliveries "
        "(event_id, sink, service_sid, session_sid, enqueued_at, next_attempt_at) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_id, sink) DO NOTHING",
        delivery_rows,
    )
