"""Pure: (stored session fingerprint, the Session as Twilio gave it) -> session events.

A session's fingerprint (``status``, ``closed_reason``, ``date_expiry``, ``date_ended``) is
stored the first time the poller sees the session. That first sight is an event only for a
session created after its Service's watch began (``session.created``); any later difference
is one ``session.updated`` with every changed field in ``changes``.

For a watch that does not read the Sessions list, :func:`needs_fetch` says when one poll is
worth one Session fetch.
"""

from __future__ import annotations

from collections.abc import Mapping

from poller.events import Changes, Event, EventType, session_event_id
from poller.state.models import StoredSession
from poller.twilio.records import Session, SessionFingerprint


def session_events(
    service_sid: str,
    stored: SessionFingerprint | None,
    session: Session,
    *,
    created: bool,
    detected_at: str,
) -> list[Event]:
    """Return the session events of one sight of ``session`` (at most one).

    ``stored``: the fingerprint from the last sight (None: the first); ``created``: this first
    sight is a session that appeared after its watch began.
    """
    new = session.fingerprint
    if stored is None:
        if not created:
            return []  # a baseline: what existed when the watch began is not news
        return [_event(EventType.SESSION_CREATED, service_sid, session, None, None, detected_at)]
    changes = changed_fields(stored, new)
    if not changes:
        return []
    return [_event(EventType.SESSION_UPDATED, service_sid, session, stored, changes, detected_at)]


def changed_fields(old: SessionFingerprint, new: SessionFingerprint) -> Changes:
    """Return field -> (old, new) for every fingerprint field that differs."""
    before, after = old._asdict(), new._asdict()
    return {key: (before[key], after[key]) for key in after if before[key] != after[key]}


def needs_fetch(
    stored: StoredSession | None,
    *,
    activity: bool,
    final: bool,
    now: float,
    refresh_seconds: float,
) -> bool:
    """Is one Session fetch worth it for a poll that has no listed Session record?

    Yes on the first sight (to store the fingerprint), when the poll found new or changed
    interactions (``activity``), on its final poll (it vanished from its list), and once every
    ``refresh_seconds`` as a safety net: a session can close or have its expiry moved without
    any interaction changing.
    """
    if stored is None or activity or final:
        return True
    return now - stored.checked_at >= refresh_seconds


def _event(
    event_type: EventType,
    service_sid: str,
    session: Session,
    old: SessionFingerprint | None,
    changes: Mapping[str, tuple[str | None, str | None]] | None,
    detected_at: str,
) -> Event:
    if event_type is EventType.SESSION_CREATED:
        timestamp = session.date_created or detected_at
    else:
        timestamp = session.date_updated or detected_at
    return Event(
        id=session_event_id(event_type, session.sid, old, session.fingerprint),
        type=event_type,
        service_sid=service_sid,
        session_sid=session.sid,
        interaction_sid="",
        interaction={},
        timestamp=timestamp,
        changes=None if changes is None else dict(changes),
        session=session.raw,
    )
