"""What the Teams, Discord and email sinks say, before each puts it in its own format.

An event becomes a :class:`Summary`: a title from its type, a list of (label, value) facts
from its ``data`` (changes first, then the SIDs, then the record's own fields) and, when the
sink includes data, the message body. Nothing here knows interactions beyond their headline,
so an event type added later (``session.updated``) renders as its title and its fields.

Every string here is raw text from Twilio: each sink escapes it for its own markup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from poller.events import Event, EventType
from poller.sinks.session_text import session_title
from poller.sinks.slack_blocks import title as interaction_title

MAX_FACTS = 14
# Record fields that are noise in a message (links, the account) or said elsewhere.
_SKIPPED = frozenset({"data", "url", "links", "account_sid", "service_sid", "session_sid", "sid"})
_SIDS = (("service_sid", "Service"), ("session_sid", "Session"))


@dataclass(frozen=True)
class Summary:
    """One event, in words: a title, facts and perhaps a message body."""

    title: str
    facts: tuple[tuple[str, str], ...]
    body: str | None
    timestamp: str
    event_id: str
    session_sid: str


def event_title(event: Event) -> str:
    """Return the headline of ``event``: "New message", "Call busy", "Session closed"."""
    if event.is_session_event:
        return session_title(event)
    if event.type in (EventType.CREATED, EventType.UPDATED):
        return interaction_title(event)
    return humanise(str(event.type))


def humanise(key: str) -> str:
    """``outbound_resource_status`` -> "Outbound resource status"."""
    words = key.replace(".", " ").replace("_", " ").split()
    return " ".join(words).capitalize() if words else key


def summarize(event: Event, *, include_data: bool) -> Summary:
    """Return the :class:`Summary` of ``event`` (the body only when ``include_data``)."""
    data = event.payload(include_data=include_data)["data"]
    facts = facts_of(data)
    return Summary(
        title=event_title(event),
        facts=tuple(facts[:MAX_FACTS]),
        body=event.message_text() if include_data else None,
        timestamp=event.timestamp,
        event_id=event.id,
        session_sid=event.session_sid,
    )


def facts_of(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (label, value) facts of an event's ``data``: changes, SIDs, then each record's fields."""
    facts: list[tuple[str, str]] = []
    changes = data.get("changes")
    changed = set(changes) if isinstance(changes, Mapping) else set()
    if isinstance(changes, Mapping):
        for key, change in changes.items():
            old, new = [*list(change), None, None][:2]
            facts.append((humanise(str(key)), f"{_text(old)} → {_text(new)}"))
    facts += [(label, str(data[key])) for key, label in _SIDS if data.get(key)]
    for name, record in data.items():
        if name == "changes" or not isinstance(record, Mapping):
            continue
        if record.get("sid"):
            facts.append((humanise(name), str(record["sid"])))
        facts += [
            (humanise(key), _text(value))
            for key, value in record.items()
            if key not in _SKIPPED
            and key not in changed  # its change says it already
            and value is not None
            and not isinstance(value, dict | list)
        ]
    return list(dict.fromkeys(facts))  # a session's own SID is the session_sid: say it once


def _text(value: object) -> str:
    return "—" if value is None or value == "" else str(value)


@dataclass(frozen=True)
class DigestSummary:
    """A burst, in words: a headline, counts by title, and the newest events first."""

    title: str
    counts: tuple[tuple[str, int], ...]
    sessions: int
    newest: tuple[Summary, ...]


def summarize_digest(events: Sequence[Event], *, include_data: bool) -> DigestSummary:
    """Return the :class:`DigestSummary` of ``events`` (all of them, newest first)."""
    titles = Counter(event_title(event) for event in events)
    sessions = len({event.session_sid for event in events})
    noun = "event" if len(events) == 1 else "events"
    places = "session" if sessions == 1 else "sessions"
    newest = sorted(events, key=lambda e: (e.timestamp, e.sort_key), reverse=True)
    return DigestSummary(
        title=f"{len(events)} {noun} in {sessions} {places}",
        counts=tuple(titles.most_common()),
        sessions=sessions,
        newest=tuple(summarize(e, include_data=include_data) for e in newest),
    )
