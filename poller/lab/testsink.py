"""``poller test-sink NAME``: send one sample event to one sink and report its answer."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from poller.config import Config
from poller.errors import ConfigError, DeliveryError
from poller.events import SESSION_EVENT_TYPES, Event, EventType
from poller.sinks import build_sinks
from poller.sinks.samples import sample_event, sample_session_event


class _NoThreads:
    """Test messages never start or join a session's Slack thread."""

    async def thread_ts(self, sink: str, session_sid: str) -> str | None:
        return None

    async def set_thread_ts(self, sink: str, session_sid: str, ts: str) -> None:
        return None


async def test_sink(config: Config, name: str) -> int:
    """Return 0 when the sink accepted the sample event, 1 when it refused it."""
    chosen = [s for s in config.sinks if s.name == name]
    if not chosen:
        names = ", ".join(s.name for s in config.sinks)
        raise ConfigError(f"sinks: no sink named {name!r} (configured: {names})")
    (sink,) = build_sinks(chosen, store=_NoThreads())
    event = _sample(chosen[0].events)
    try:
        await sink.send(event)
    except DeliveryError as exc:
        # The new sinks name the answer themselves ("HTTP 404", "SMTP 535"): say it once.
        named = exc.status is None or str(exc.status) in str(exc)
        status = "" if named else f" (HTTP {exc.status})"
        print(f"sink {name}: refused{status}: {exc}", file=sys.stderr)
        return 1
    finally:
        await sink.aclose()
    print(f"sink {name}: accepted event {event.id} ({event.type.value})")
    return 0


def _sample(events: Sequence[str]) -> Event:
    """The sample message; for a sink that never takes one, a sample of the first type it takes.

    A sink that asked for session events only (its ``body_template`` may read nothing else)
    gets a session event, not one it would never receive.
    """
    if not events or EventType.CREATED.value in events:
        return sample_event()
    first = EventType(events[0])
    if first.value in SESSION_EVENT_TYPES:
        return sample_session_event(datetime.now(UTC), first)
    return sample_event(event_type=first)
