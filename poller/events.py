"""Events: what the poller tells sinks, with ids that never change.

An event id is derived from what happened, never from when it was seen, so the same interaction
and the same change give the same id after any number of restarts (``webhook-id``).

Interaction events carry the interaction (``data.interaction``); session events
(``session.created``, ``session.updated``) carry the session (``data.session``) and no
interaction (``interaction_sid`` is empty).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the config imports this module for the event types: records cost its start
    from poller.twilio.records import Fingerprint, SessionFingerprint


class EventType(StrEnum):
    CREATED = "interaction.created"
    UPDATED = "interaction.updated"
    SESSION_CREATED = "session.created"
    SESSION_UPDATED = "session.updated"


SESSION_EVENT_TYPES: tuple[str, ...] = (
    EventType.SESSION_CREATED.value,
    EventType.SESSION_UPDATED.value,
)
# What a sink receives when its config names no ``events``: session events are opt-in.
INTERACTION_EVENT_TYPES: tuple[str, ...] = (EventType.CREATED.value, EventType.UPDATED.value)
EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)

Changes = Mapping[str, tuple[str | None, str | None]]


def event_id(
    event_type: EventType,
    interaction_sid: str,
    old: Fingerprint | None,
    new: Fingerprint,
) -> str:
    """Return the stable id of one event: ``evt_`` + 32 hex digits."""
    import hashlib  # not at import: OpenSSL's start is paid only by commands that make events

    parts = [event_type.value, interaction_sid]
    if event_type is EventType.UPDATED:
        parts += [json.dumps(list(old) if old else None), json.dumps(list(new))]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"evt_{digest[:32]}"


def session_event_id(
    event_type: EventType,
    session_sid: str,
    old: SessionFingerprint | None,
    new: SessionFingerprint,
) -> str:
    """Return the stable id of one session event: ``evt_`` + 32 hex digits.

    ``session.created`` is one per session; ``session.updated`` is a function of the change
    (the fingerprint before and after), so the same change gives the same id and a session
    closed, reopened and closed again gives two.
    """
    import hashlib

    parts = [event_type.value, session_sid]
    if event_type is EventType.SESSION_UPDATED:
        parts += [json.dumps(list(old) if old else None), json.dumps(list(new))]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"evt_{digest[:32]}"


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one interaction (or of one session: ``session`` is set), as detected."""

    id: str
    type: EventType
    service_sid: str
    session_sid: str
    interaction_sid: str
    interaction: Mapping[str, Any]
    timestamp: str
    changes: Changes | None = None
    # Order within a session: (date_created, sid); kept so the outbox can deliver in order.
    sort_key: str = field(default="", compare=False)
    # The session as Twilio returned it: session events only.
    session: Mapping[str, Any] | None = None

    @property
    def is_session_event(self) -> bool:
        return self.session is not None

    def payload(self, *, include_data: bool = True) -> dict[str, Any]:
        """Return the webhook body of the contract (``type``, ``timestamp``, ``data``)."""
        if self.session is not None:
            return self._session_payload(self.session)
        interaction = dict(self.interaction)
        if not include_data:
            interaction.pop("data", None)
        data: dict[str, Any] = {
            "service_sid": self.service_sid,
            "session_sid": self.session_sid,
            "interaction": interaction,
        }
        if self.changes is not None:
            data["changes"] = {k: [v[0], v[1]] for k, v in self.changes.items()}
        return {"type": self.type.value, "timestamp": self.timestamp, "data": data}

    def _session_payload(self, session: Mapping[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "service_sid": self.service_sid,
            "session_sid": self.session_sid,
            "session": dict(session),
        }
        if self.changes is not None:
            data["changes"] = {k: [v[0], v[1]] for k, v in self.changes.items()}
        return {"type": self.type.value, "timestamp": self.timestamp, "data": data}

    def to_json(self) -> str:
        """Serialise for the outbox (round-trips through :meth:`from_json`)."""
        return json.dumps(
            {
                "id": self.id,
                "type": self.type.value,
                "service_sid": self.service_sid,
                "session_sid": self.session_sid,
                "interaction_sid": self.interaction_sid,
                "interaction": self.interaction,
                "timestamp": self.timestamp,
                "changes": None
                if self.changes is None
                else {k: list(v) for k, v in self.changes.items()},
                "sort_key": self.sort_key,
                **({} if self.session is None else {"session": self.session}),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Event:
        obj = json.loads(text)
        changes = obj.get("changes")
        return cls(
            id=obj["id"],
            type=EventType(obj["type"]),
            service_sid=obj["service_sid"],
            session_sid=obj["session_sid"],
            interaction_sid=obj["interaction_sid"],
            interaction=obj["interaction"],
            timestamp=obj["timestamp"],
            changes=None if changes is None else {k: (v[0], v[1]) for k, v in changes.items()},
            sort_key=obj.get("sort_key", ""),
            session=obj.get("session"),
        )

    def message_text(self) -> str | None:
        """The message body of a message interaction (personal data: never log it)."""
        return _data_field(self.interaction, "body")

    def call_duration(self) -> str | None:
        """The duration in seconds of a call interaction, when Twilio knows it."""
        return _data_field(self.interaction, "duration")


def _data_field(interaction: Mapping[str, Any], key: str) -> str | None:
    raw = interaction.get("data")
    if not isinstance(raw, str):
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    value = parsed.get(key) if isinstance(parsed, dict) else None
    return None if value is None else str(value)
