"""Change detection: (known fingerprints, fetched interactions) -> events. Pure, no I/O.

Twilio's list order is never trusted. A fetch is reduced to one record per sid (the latest
``date_updated`` wins; ties are broken by content, so the input order never matters) and events
come out ordered by ``(date_created, sid)``. Interactions that a listing lacks make no event and
stay known: the known set becomes ``known | known_after(fetched)`` (the fetch winning), so an
interaction that comes back with another fingerprint is an update, never created a second time,
and an event id (a function of the sid and the change) never carries two different contents.

Times are compared as instants: a timestamp with an offset is converted to UTC, one without is
taken as UTC, one that does not parse counts as missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from poller.events import Changes, Event, EventType, event_id
from poller.twilio.records import FINGERPRINT_FIELDS, Fingerprint, Interaction, parse_time

_EARLIEST = datetime.min.replace(tzinfo=UTC)


def diff(
    service_sid: str,
    session_sid: str,
    known: Mapping[str, Fingerprint],
    fetched: Iterable[Interaction],
    detected_at: str,
) -> list[Event]:
    """Return the events that turn ``known`` into the fetched state, by (date_created, sid)."""
    events: list[Event] = []
    for sid, interaction in _latest_by_sid(fetched).items():
        old = known.get(sid)
        new = interaction.fingerprint
        if old is None:
            events.append(_created(service_sid, session_sid, interaction, detected_at))
        elif old != new:
            events.append(_updated(service_sid, session_sid, interaction, old, detected_at))
    events.sort(key=lambda event: event.sort_key)
    return events


def known_after(fetched: Iterable[Interaction]) -> dict[str, Fingerprint]:
    """Return what a fetch says is known: the fingerprint of each sid's latest record.

    The state merges it into what it knew (``Store.commit_poll``); it never replaces it.
    """
    return {sid: it.fingerprint for sid, it in _latest_by_sid(fetched).items()}


def apply(known: Mapping[str, Fingerprint], events: Iterable[Event]) -> dict[str, Fingerprint]:
    """Replay events onto a known state; raise ValueError on an event that does not fit it."""
    result = dict(known)
    for event in events:
        sid = event.interaction_sid
        if event.type is EventType.CREATED:
            result[sid] = _fingerprint_of(event.interaction)
            continue
        current = result.get(sid)
        if current is None:
            raise ValueError(f"interaction.updated for unknown interaction {sid}")
        result[sid] = _replay_changes(sid, current, event.changes or {})
    return result


def sort_key(interaction: Interaction) -> str:
    """Return a string that sorts like ``(date_created, sid)``, a missing date first."""
    created = utc_instant(interaction.date_created)
    if created is None:
        return f"0 {interaction.sid}"
    # isoformat of a UTC instant has a fixed width, so the sid only decides between equal times.
    return f"1{created.isoformat(timespec='microseconds')} {interaction.sid}"


def _created(
    service_sid: str, session_sid: str, interaction: Interaction, detected_at: str
) -> Event:
    return Event(
        id=event_id(EventType.CREATED, interaction.sid, None, interaction.fingerprint),
        type=EventType.CREATED,
        service_sid=service_sid,
        session_sid=session_sid,
        interaction_sid=interaction.sid,
        interaction=interaction.raw,
        timestamp=_timestamp(interaction.date_created, detected_at),
        sort_key=sort_key(interaction),
    )


def _updated(
    service_sid: str,
    session_sid: str,
    interaction: Interaction,
    old: Fingerprint,
    detected_at: str,
) -> Event:
    new = interaction.fingerprint
    changes = {
        name: (before, after)
        for name, before, after in zip(FINGERPRINT_FIELDS, old, new, strict=True)
        if before != after
    }
    return Event(
        id=event_id(EventType.UPDATED, interaction.sid, old, new),
        type=EventType.UPDATED,
        service_sid=service_sid,
        session_sid=session_sid,
        interaction_sid=interaction.sid,
        interaction=interaction.raw,
        timestamp=_timestamp(interaction.date_updated, detected_at),
        changes=changes,
        sort_key=sort_key(interaction),
    )


def _timestamp(value: str | None, detected_at: str) -> str:
    # Twilio's own string when it is a time; what the poller saw otherwise.
    return value if value is not None and utc_instant(value) is not None else detected_at


def _latest_by_sid(fetched: Iterable[Interaction]) -> dict[str, Interaction]:
    groups: dict[str, list[Interaction]] = {}
    for interaction in fetched:
        groups.setdefault(interaction.sid, []).append(interaction)
    return {
        sid: group[0] if len(group) == 1 else max(group, key=_preference)
        for sid, group in groups.items()
    }


def _preference(interaction: Interaction) -> tuple[datetime, str]:
    # Paging anomalies can list one sid twice: the latest date_updated wins (a missing one is
    # the earliest), then the content decides, so the same records in any order give one result.
    updated = utc_instant(interaction.date_updated) or _EARLIEST
    return (updated, json.dumps(interaction.raw, sort_keys=True, default=str))


def utc_instant(value: str | None) -> datetime | None:
    """Parse a Twilio time as an aware UTC instant (no offset: UTC); None when unreadable."""
    parsed = parse_time(value)
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # an offset that pushes the instant outside datetime's range
        return None


def _replay_changes(sid: str, current: Fingerprint, changes: Changes) -> Fingerprint:
    values: list[str | None] = []
    for name, value in zip(FINGERPRINT_FIELDS, current, strict=True):
        old, new = changes.get(name, (value, value))
        if old != value:
            raise ValueError(f"interaction.updated for {sid}: {name} was {value!r}, not {old!r}")
        values.append(new)
    return Fingerprint(*values)


def _fingerprint_of(raw: Mapping[str, object]) -> Fingerprint:
    values = [raw.get(name) for name in FINGERPRINT_FIELDS]
    return Fingerprint(*(value if isinstance(value, str) else None for value in values))
