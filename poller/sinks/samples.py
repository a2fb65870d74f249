"""A realistic sample event, for ``poller test-sink NAME`` (and documentation).

It is shaped like Twilio's own Interaction fixture: a text message from a customer's
participant to an agent's, relayed through a Proxy Session.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime

from poller.detect.diff import sort_key
from poller.detect.session_diff import session_events
from poller.events import EVENT_TYPES, SESSION_EVENT_TYPES, Event, EventType, event_id
from poller.twilio.records import Interaction, Session, SessionFingerprint

SAMPLE_ACCOUNT_SID = "AC" + "a" * 32
SAMPLE_SERVICE_SID = "KS" + "a" * 32
SAMPLE_SESSION_SID = "KC" + "a" * 32
SAMPLE_BODY = "Hi! This is a test message from twilio-proxy-poller. Your driver is 2 minutes away."


def sample_event(now: datetime | None = None, event_type: EventType = EventType.CREATED) -> Event:
    """Return an ``interaction.created`` event for a message sent at ``now`` (default: now).

    ``event_type=EventType.UPDATED`` gives the same message's ``interaction.updated`` (its
    outbound status went from ``sent`` to ``delivered``), to check templates against.

    The interaction SID (so the event id) is derived from ``now``: two tests are two events,
    and a receiver that drops duplicate ids still shows the second one.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    sid = "KI" + hashlib.sha256(stamp.encode()).hexdigest()[:32]
    session_url = f"https://proxy.twilio.com/v1/Services/{SAMPLE_SERVICE_SID}/Sessions"
    raw = {
        "account_sid": SAMPLE_ACCOUNT_SID,
        "service_sid": SAMPLE_SERVICE_SID,
        "session_sid": SAMPLE_SESSION_SID,
        "sid": sid,
        "type": "message",
        "data": json.dumps({"body": SAMPLE_BODY}),
        "date_created": stamp,
        "date_updated": stamp,
        "inbound_participant_sid": "KP" + "a" * 32,
        "inbound_resource_sid": "SM" + "a" * 32,
        "inbound_resource_status": "received",
        "inbound_resource_type": "Message",
        "inbound_resource_url": None,
        "outbound_participant_sid": "KP" + "b" * 32,
        "outbound_resource_sid": "SM" + "b" * 32,
        "outbound_resource_status": "sent",
        "outbound_resource_type": "Message",
        "outbound_resource_url": None,
        "url": f"{session_url}/{SAMPLE_SESSION_SID}/Interactions/{sid}",
    }
    if event_type is EventType.UPDATED:
        return _updated(raw, stamp)
    interaction = Interaction.from_api(raw)
    assert interaction is not None  # the record above has a sid
    return Event(
        id=event_id(EventType.CREATED, sid, None, interaction.fingerprint),
        type=EventType.CREATED,
        service_sid=SAMPLE_SERVICE_SID,
        session_sid=SAMPLE_SESSION_SID,
        interaction_sid=sid,
        interaction=raw,
        timestamp=stamp,
        sort_key=sort_key(interaction),
    )


def _updated(raw: dict[str, str | None], stamp: str) -> Event:
    before = Interaction.from_api(raw)
    raw = {**raw, "outbound_resource_status": "delivered"}
    after = Interaction.from_api(raw)
    assert before is not None  # the record has a sid
    assert after is not None
    sid = str(raw["sid"])
    return Event(
        id=event_id(EventType.UPDATED, sid, before.fingerprint, after.fingerprint),
        type=EventType.UPDATED,
        service_sid=SAMPLE_SERVICE_SID,
        session_sid=SAMPLE_SESSION_SID,
        interaction_sid=sid,
        interaction=raw,
        timestamp=stamp,
        changes={"outbound_resource_status": ("sent", "delivered")},
        sort_key=sort_key(after),
    )


def sample_session_event(moment: datetime, event_type: EventType) -> Event:
    """Return a ``session.created`` (an open session) or a ``session.updated`` (it closed)."""
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    url = f"https://proxy.twilio.com/v1/Services/{SAMPLE_SERVICE_SID}/Sessions/{SAMPLE_SESSION_SID}"
    raw = {
        "service_sid": SAMPLE_SERVICE_SID,
        "status": "open",
        "unique_name": "Order #1234",
        "date_started": stamp,
        "date_ended": None,
        "date_last_interaction": None,
        "date_expiry": None,
        "ttl": 0,
        "mode": "voice-and-message",
        "closed_reason": None,
        "sid": SAMPLE_SESSION_SID,
        "date_updated": stamp,
        "date_created": stamp,
        "account_sid": SAMPLE_ACCOUNT_SID,
        "url": url,
        "links": {"interactions": f"{url}/Interactions", "participants": f"{url}/Participants"},
    }
    created = event_type is EventType.SESSION_CREATED
    stored = None if created else SessionFingerprint("in-progress", None, None, None)
    if not created:
        raw = {**raw, "status": "closed", "closed_reason": "", "date_ended": stamp}
    session = Session.from_api(raw)
    assert session is not None  # the record above has a sid
    (event,) = session_events(
        SAMPLE_SERVICE_SID, stored, session, created=created, detected_at=stamp
    )
    return event


def sample_events(types: Iterable[str]) -> list[Event]:
    """Return one sample event of each of ``types`` (event type names) it knows."""
    moment = datetime(2026, 11, 27, 10, 0, 5, tzinfo=UTC)
    return [
        sample_session_event(moment, EventType(t))
        if t in SESSION_EVENT_TYPES
        else sample_event(moment, EventType(t))
        for t in types
        if t in EVENT_TYPES
    ]
