"""Typed records for what Twilio Proxy returns.

Every field may be null; ``type`` and the status fields are open enums (kept as plain strings).
Each record keeps the raw JSON object exactly as Twilio returned it, for event payloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

# Statuses after which an interaction's resource no longer changes.
FINAL_STATUSES = frozenset(
    {
        "delivered",
        "undelivered",
        "failed",
        "canceled",
        "completed",
        "busy",
        "no-answer",
        "deleted",
        "received",
    }
)
# Session statuses after which no new interaction can appear.
FINAL_SESSION_STATUSES = frozenset({"closed", "failed"})


def parse_time(value: object) -> datetime | None:
    """Parse Twilio's ISO 8601 timestamps (``2015-07-30T20:00:00Z``); anything else is None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class Fingerprint(NamedTuple):
    """The fields whose change makes an ``interaction.updated`` event."""

    date_updated: str | None
    inbound_resource_status: str | None
    outbound_resource_status: str | None


FINGERPRINT_FIELDS: tuple[str, ...] = Fingerprint._fields


class SessionFingerprint(NamedTuple):
    """The fields of a Session whose change makes a ``session.updated`` event."""

    status: str | None
    closed_reason: str | None
    date_expiry: str | None
    date_ended: str | None


SESSION_FINGERPRINT_FIELDS: tuple[str, ...] = SessionFingerprint._fields


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and 50,000 of
# these are built per full scan (bench/bench_fullscan.py). Nothing mutates them.
@dataclass(slots=True)
class Interaction:
    """One Proxy Interaction (a message or a call)."""

    sid: str
    session_sid: str | None
    service_sid: str | None
    type: str | None
    inbound_resource_status: str | None
    outbound_resource_status: str | None
    date_created: str | None
    date_updated: str | None
    raw: Mapping[str, Any]

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Interaction | None:
        """Build from one JSON object of a list page; None when it has no usable ``sid``."""
        # Inline and positional: a full scan builds 50,000 of these, and a helper call per
        # field cost a third of it. JSON gives exact ``str`` objects, so ``type() is str``.
        get = raw.get
        sid = get("sid")
        if type(sid) is not str or not sid:
            return None
        session, service, kind = get("session_sid"), get("service_sid"), get("type")
        inbound, outbound = get("inbound_resource_status"), get("outbound_resource_status")
        created, updated = get("date_created"), get("date_updated")
        return cls(
            sid,
            session if type(session) is str else None,
            service if type(service) is str else None,
            kind if type(kind) is str else None,
            inbound if type(inbound) is str else None,
            outbound if type(outbound) is str else None,
            created if type(created) is str else None,
            updated if type(updated) is str else None,
            raw,
        )

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            self.date_updated, self.inbound_resource_status, self.outbound_resource_status
        )

    @property
    def is_settled(self) -> bool:
        """True when no known status can still change (both ends final or absent)."""
        inbound, outbound = self.inbound_resource_status, self.outbound_resource_status
        return (not inbound or inbound in FINAL_STATUSES) and (
            not outbound or outbound in FINAL_STATUSES
        )


@dataclass(frozen=True, slots=True)
class Session:
    """One Proxy Session, as listed by the Service's Sessions endpoint."""

    sid: str
    service_sid: str | None
    status: str | None
    unique_name: str | None
    date_created: str | None
    date_updated: str | None
    date_last_interaction: str | None
    date_expiry: str | None
    raw: Mapping[str, Any]
    closed_reason: str | None = None
    date_ended: str | None = None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Session | None:
        """Build from one JSON object of a list page; None when it has no usable ``sid``."""
        sid = raw.get("sid")
        if not isinstance(sid, str) or not sid:
            return None
        return cls(
            sid=sid,
            service_sid=_str_or_none(raw.get("service_sid")),
            status=_str_or_none(raw.get("status")),
            unique_name=_str_or_none(raw.get("unique_name")),
            date_created=_str_or_none(raw.get("date_created")),
            date_updated=_str_or_none(raw.get("date_updated")),
            date_last_interaction=_str_or_none(raw.get("date_last_interaction")),
            date_expiry=_str_or_none(raw.get("date_expiry")),
            raw=raw,
            closed_reason=_str_or_none(raw.get("closed_reason")),
            date_ended=_str_or_none(raw.get("date_ended")),
        )

    @property
    def fingerprint(self) -> SessionFingerprint:
        return SessionFingerprint(
            self.status, self.closed_reason, self.date_expiry, self.date_ended
        )

    @property
    def is_closed(self) -> bool:
        return self.status in FINAL_SESSION_STATUSES

    @property
    def activity_marker(self) -> str:
        """What moves when the session sees a new interaction or changes."""
        return f"{self.date_last_interaction or ''}|{self.date_updated or ''}|{self.status or ''}"
