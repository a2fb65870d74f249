"""The simulator's resources (Service, Session, Interaction), their JSON shapes, and paging.

Shapes follow tests/fixtures/interaction_fetch.json and session_fetch.json field for field.
Dates are whole Unix seconds rendered as Twilio does (``2015-07-30T20:00:00Z``).
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MESSAGE_OUTBOUND = ("queued", "sending", "sent", "delivered")
MESSAGE_INBOUND = ("delivered",)
VOICE_OUTBOUND = ("initiated", "ringing", "in-progress", "completed")
VOICE_INBOUND = ("in-progress", "completed")


def progression(type_: str, side: str) -> tuple[str, ...]:
    """The order in which the statuses of one side of an interaction advance."""
    if type_ == "voice":
        return VOICE_INBOUND if side == "inbound" else VOICE_OUTBOUND
    return MESSAGE_INBOUND if side == "inbound" else MESSAGE_OUTBOUND


@lru_cache(maxsize=8192)
def iso(seconds: int) -> str:
    """Render Unix seconds like Twilio: ISO 8601 in UTC with a ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _iso_or_none(seconds: int | None) -> str | None:
    return None if seconds is None else iso(seconds)


@dataclass(frozen=True, slots=True)
class PageSlice(Generic[T]):
    """One page, newest first, and the cursors around it."""

    items: list[T]
    newest_seq: int | None
    oldest_seq: int | None
    has_older: bool
    has_newer: bool


class OrderedIndex(Generic[T]):
    """Items in creation order, each with a sequence number; pages newest first in O(page)."""

    def __init__(self) -> None:
        self._seqs: list[int] = []
        self._items: list[T] = []
        self._by_key: dict[str, tuple[int, T]] = {}
        self._next_seq = 1

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))

    def get(self, key: str) -> T | None:
        entry = self._by_key.get(key)
        return None if entry is None else entry[1]

    def add(self, key: str, item: T) -> None:
        seq = self._next_seq
        self._next_seq += 1
        self._seqs.append(seq)
        self._items.append(item)
        self._by_key[key] = (seq, item)

    def remove(self, key: str) -> T | None:
        entry = self._by_key.pop(key, None)
        if entry is None:
            return None
        index = bisect_left(self._seqs, entry[0])
        del self._seqs[index]
        del self._items[index]
        return entry[1]

    def page(
        self,
        size: int,
        *,
        offset: int = 0,
        older_than: int | None = None,
        newer_than: int | None = None,
    ) -> PageSlice[T]:
        """Return ``size`` items newest first: by offset, or next to a cursor (a sequence)."""
        count = len(self._seqs)
        if newer_than is not None:
            start = bisect_right(self._seqs, newer_than)
            end = min(count, start + size)
        else:
            end = bisect_left(self._seqs, older_than) if older_than is not None else count - offset
            end = max(0, end)
            start = max(0, end - size)
        items = self._items[start:end][::-1]
        return PageSlice(
            items=items,
            newest_seq=self._seqs[end - 1] if items else None,
            oldest_seq=self._seqs[start] if items else None,
            has_older=start > 0,
            has_newer=end < count,
        )


@dataclass(slots=True)
class SimInteraction:
    sid: str
    service_sid: str
    session_sid: str
    type: str
    data: str | None
    inbound_participant_sid: str | None
    inbound_resource_sid: str | None
    inbound_resource_type: str | None
    inbound_status: str | None
    outbound_participant_sid: str | None
    outbound_resource_sid: str | None
    outbound_resource_type: str | None
    outbound_status: str | None
    date_created: int
    date_updated: int

    def to_json(self, account_sid: str, base_url: str) -> dict[str, Any]:
        return {
            "service_sid": self.service_sid,
            "data": self.data,
            "date_created": iso(self.date_created),
            "date_updated": iso(self.date_updated),
            "inbound_participant_sid": self.inbound_participant_sid,
            "inbound_resource_sid": self.inbound_resource_sid,
            "inbound_resource_status": self.inbound_status,
            "inbound_resource_type": self.inbound_resource_type,
            "inbound_resource_url": None,
            "outbound_participant_sid": self.outbound_participant_sid,
            "outbound_resource_sid": self.outbound_resource_sid,
            "outbound_resource_status": self.outbound_status,
            "outbound_resource_type": self.outbound_resource_type,
            "outbound_resource_url": None,
            "sid": self.sid,
            "type": self.type,
            "url": f"{base_url}/v1/Services/{self.service_sid}/Sessions/{self.session_sid}"
            f"/Interactions/{self.sid}",
            "account_sid": account_sid,
            "session_sid": self.session_sid,
        }


@dataclass(slots=True)
class SimSession:
    sid: str
    service_sid: str
    unique_name: str | None
    status: str
    mode: str
    ttl: int
    participants: tuple[str, str]
    date_created: int
    date_updated: int
    date_started: int | None = None
    date_ended: int | None = None
    date_last_interaction: int | None = None
    closed_reason: str | None = None
    # The latest date any change of this session (or of its interactions) was stamped with.
    last_stamp: int = 0
    interactions: OrderedIndex[SimInteraction] = field(default_factory=OrderedIndex)

    def to_json(self, account_sid: str, base_url: str) -> dict[str, Any]:
        url = f"{base_url}/v1/Services/{self.service_sid}/Sessions/{self.sid}"
        expiry = None
        if self.ttl:
            expiry = (self.date_last_interaction or self.date_created) + self.ttl
        return {
            "service_sid": self.service_sid,
            "status": self.status,
            "unique_name": self.unique_name,
            "date_started": _iso_or_none(self.date_started),
            "date_ended": _iso_or_none(self.date_ended),
            "date_last_interaction": _iso_or_none(self.date_last_interaction),
            "date_expiry": _iso_or_none(expiry),
            "ttl": self.ttl,
            "mode": self.mode,
            "closed_reason": self.closed_reason,
            "sid": self.sid,
            "date_updated": iso(self.date_updated),
            "date_created": iso(self.date_created),
            "account_sid": account_sid,
            "url": url,
            "links": {
                "interactions": f"{url}/Interactions",
                "participants": f"{url}/Participants",
            },
        }


@dataclass(slots=True)
class SimService:
    sid: str
    friendly_name: str
    date_created: int
    sessions: OrderedIndex[SimSession] = field(default_factory=OrderedIndex)
    unique_names: dict[str, str] = field(default_factory=dict)

    def to_json(self, account_sid: str, base_url: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "friendly_name": self.friendly_name,
            "account_sid": account_sid,
            "date_created": iso(self.date_created),
            "url": f"{base_url}/v1/Services/{self.sid}",
        }
