"""A state that has delivered events in the past: seeded through the store API, times given.

Each event is committed as a poll at its detection time and acked with one delivered attempt
a moment later, exactly as the dispatcher would have done then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from poller.events import Event
from poller.state.base import StateStore
from poller.state.history import Attempt


@dataclass(frozen=True, slots=True)
class Past:
    """One event of the past: when it was detected, and the sinks that took it."""

    event: Event
    at: float
    sinks: tuple[str, ...] = ("ops",)


async def seed_delivered(store: StateStore, past: Sequence[Past]) -> None:
    """Store ``past`` (in that order) as detected and delivered at their times."""
    for item in past:
        event = item.event
        await store.commit_poll(
            event.service_sid,
            event.session_sid,
            fetched={},
            events=[(event, list(item.sinks))],
            now=item.at,
        )
        for sink in item.sinks:
            (delivery,) = [d for d in await store.due(sink, None, 1000) if d.event.id == event.id]
            attempt = Attempt(delivery.id, item.at + 0.5, 0.02, "delivered")
            await store.ack([delivery.id], history=[attempt])
