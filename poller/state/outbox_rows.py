"""What storing detected events writes, whatever the backend: a row per event, one per sink."""

from __future__ import annotations

from collections.abc import Sequence

from poller.events import Event

# (id, service_sid, session_sid, body, type, created_at): the columns every backend's
# ``events`` table takes from a new event.
EventValues = tuple[str, str, str, str, str, float]


def outbox_rows(
    events: Sequence[tuple[Event, Sequence[str]]], now: float
) -> tuple[list[EventValues], list[tuple[Event, str]]]:
    """Return the events to store (those going to a sink) and each (event, sink) to queue.

    In the order given, so that each (sink, session) queue keeps the poll's order. ``sinks``
    must be a sequence of names, never a ``str`` (TypeError).
    """
    stored: list[EventValues] = []
    queued: list[tuple[Event, str]] = []
    for event, sinks in events:
        if isinstance(sinks, str):
            raise TypeError(f"sinks of event {event.id} must be a sequence of names, not a str")
        if sinks:
            body = event.to_json()
            stored.append(
                (event.id, event.service_sid, event.session_sid, body, event.type.value, now)
            )
            queued += [(event, sink) for sink in sinks]
    return stored, queued
