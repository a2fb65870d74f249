"""Test oracles of the diff: events replayed onto a known set, and what a fetch says is known.

Not production code: the poller never replays its events; the property tests check that
replaying them gives what the poller stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from poller.detect.diff import diff
from poller.events import Changes, Event, EventType
from poller.twilio.records import FINGERPRINT_FIELDS, Fingerprint, Interaction


def known_after(fetched: Sequence[Interaction]) -> dict[str, Fingerprint]:
    """What a fetch alone says is known: the fingerprint of each sid's latest record."""
    return dict(diff("KS", "KC", {}, fetched, "", notify=False).known_after)


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
