"""Change detection: (known fingerprints, fetched interactions) -> events. Pure, no I/O.

Twilio's list order is never trusted. A fetch is reduced to one record per sid (the latest
``date_updated`` wins; ties are broken by content, so the input order never matters) and events
come out ordered by ``(date_created, sid)``. Interactions that a listing lacks make no event and
stay known: the known set becomes ``known | (the fetch's fingerprints)``, the fetch winning, so an
interaction that comes back with another fingerprint is an update, never created a second time,
and an event id (a function of the sid and the change) never carries two different contents.

Times are compared as instants: a timestamp with an offset is converted to UTC, one without is
taken as UTC, one that does not parse counts as missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from poller.events import Event, EventType, event_id
from poller.twilio.records import FINGERPRINT_FIELDS, Fingerprint, Interaction, parse_time

_EARLIEST = datetime.min.replace(tzinfo=UTC)


class Diff(NamedTuple):
    """What one fetch means against the known set: the one answer a poll acts on."""

    events: list[Event]
    # The known set after the poll: ``known | (each sid's latest fingerprint)``, the fetch
    # winning; ``known`` itself when the fetch changes nothing.
    known_after: Mapping[str, Fingerprint]
    # Every record listed has its sid's known fingerprint: no event, nothing to store.
    unchanged: bool


def diff(
    service_sid: str,
    session_sid: str,
    known: Mapping[str, Fingerprint],
    fetched: Sequence[Interaction],
    detected_at: str,
    *,
    assumed: Mapping[str, Fingerprint] | None = None,
    notify: bool = True,
) -> Diff:
    """Diff a fetch against the known set; events ordered by (date_created, sid).

    ``assumed``: interactions taken as known for the events though never stored (a baseline's
    share; the stored ``known`` wins over them). ``notify=False``: a baseline, no event at all.
    """
    if _unchanged(known, fetched):
        # Most polls find nothing new: no record is grouped, no fingerprint built.
        return Diff([], known, unchanged=True)
    return _changes(service_sid, session_sid, known, fetched, detected_at, assumed, notify)


def _changes(
    service_sid: str,
    session_sid: str,
    known: Mapping[str, Fingerprint],
    fetched: Iterable[Interaction],
    detected_at: str,
    assumed: Mapping[str, Fingerprint] | None,
    notify: bool,
) -> Diff:
    """The diff of a fetch that changes something: each sid's latest record, once."""
    before = {**assumed, **known} if assumed else known
    events: list[Event] = []
    after = dict(known)
    for sid, interaction in _latest_by_sid(fetched).items():
        new = interaction.fingerprint
        after[sid] = new
        if not notify:
            continue
        old = before.get(sid)
        if old is None:
            events.append(_created(service_sid, session_sid, interaction, new, detected_at))
        elif old != new:
            events.append(_updated(service_sid, session_sid, interaction, old, new, detected_at))
    events.sort(key=lambda event: event.sort_key)
    return Diff(events, after, unchanged=False)


def _unchanged(known: Mapping[str, Fingerprint], fetched: Iterable[Interaction]) -> bool:
    """True when every record listed has its sid's known fingerprint.

    Then ``known_after == known`` and no event can come out. Known sids the fetch lacks stay
    known, so they do not count. A sid listed twice passes only when both records are the
    known one (whichever wins, nothing changes).
    """
    get = known.get
    for interaction in fetched:
        # Interaction.fingerprint's fields, as a plain tuple (equal to the Fingerprint): a full
        # scan compares every interaction it lists, and a loop building no Fingerprint (nor an
        # attrgetter's tuple, nor a generator) costs half as much.
        fingerprint = (
            interaction.date_updated,
            interaction.inbound_resource_status,
            interaction.outbound_resource_status,
        )
        if get(interaction.sid) != fingerprint:
            return False
    return True


def sort_key(interaction: Interaction) -> str:
    """Return a string that sorts like ``(date_created, sid)``, a missing date first."""
    created = utc_instant(interaction.date_created)
    if created is None:
        return f"0 {interaction.sid}"
    # isoformat of a UTC instant has a fixed width, so the sid only decides between equal times.
    return f"1{created.isoformat(timespec='microseconds')} {interaction.sid}"


def _created(
    service_sid: str,
    session_sid: str,
    interaction: Interaction,
    new: Fingerprint,
    detected_at: str,
) -> Event:
    return Event(
        id=event_id(EventType.CREATED, interaction.sid, None, new),
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
    new: Fingerprint,
    detected_at: str,
) -> Event:
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
