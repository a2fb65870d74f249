"""Where one poll gets its Session record: from the Sessions list, or from one Session fetch.

A watch that reads its Service's Sessions list hands every poll the listed record for free. A
watch that does not (an explicit ``sessions:`` list too short for the listing to pay) fetches
the Session only when :func:`poller.detect.session_diff.needs_fetch` says it is worth one request.
A fetch that fails (other than on the credentials) costs the poll its session events only: the
interactions' events are committed, and the next poll fetches again (nothing was stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from poller.detect.session_diff import needs_fetch, session_events
from poller.errors import CredentialsError, SourceError
from poller.events import Event, EventType
from poller.record import Record
from poller.state.base import StateStore
from poller.state.models import StoredSession
from poller.twilio.records import FINAL_SESSION_STATUSES, Session, SessionFingerprint

log = structlog.get_logger(__name__)


class SessionFetcher(Protocol):
    async def fetch_session(self, service_sid: str, session_sid: str) -> Session: ...


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Sight(Record):
    """One poll's view of the Session record, against what the state holds of it."""

    record: Session
    stored: StoredSession | None
    fetched: bool

    def to_store(self) -> SessionFingerprint | None:
        """The fingerprint to store with the poll (None: the stored one still holds)."""
        new = self.record.fingerprint
        if self.fetched or self.stored is None or self.stored.fingerprint != new:
            return new
        return None

    @property
    def closed_since_listing(self) -> bool:
        """Fetched after the interactions, and final where the state had it open.

        The session may have closed between the two requests, after interactions that the
        listing missed: list them once more (a final session makes no new interactions).
        """
        if not self.fetched or self.record.status not in FINAL_SESSION_STATUSES:
            return False
        return self.stored is None or self.stored.fingerprint.status not in FINAL_SESSION_STATUSES

    def events(self, service_sid: str, *, created: bool, detected_at: str) -> list[Event]:
        stored = None if self.stored is None else self.stored.fingerprint
        return session_events(
            service_sid, stored, self.record, created=created, detected_at=detected_at
        )


class SessionSights:
    """Give each poll its :class:`Sight` (None: no record, and none worth fetching)."""

    def __init__(
        self, source: SessionFetcher | None, store: StateStore, *, refresh_seconds: float
    ) -> None:
        self._source = source
        self._store = store
        self._refresh = refresh_seconds

    async def sight(
        self,
        service_sid: str,
        session_sid: str,
        listed: Session | None,
        *,
        activity: bool,
        final: bool,
        now: float,
    ) -> Sight | None:
        """Return the listed record, or fetch it when worth it (raises CredentialsError)."""
        stored = await self._store.session_fingerprint(session_sid)
        if listed is not None:
            return Sight(listed, stored, fetched=False)
        if self._source is None:
            return None
        if not needs_fetch(
            stored, activity=activity, final=final, now=now, refresh_seconds=self._refresh
        ):
            return None
        try:
            record = await self._source.fetch_session(service_sid, session_sid)
        except CredentialsError:
            raise
        except SourceError as exc:
            log.warning("session_fetch_failed", error=str(exc), error_type=type(exc).__name__)
            return None
        return Sight(record, stored, fetched=True)


def in_session_order(session: Sequence[Event], interactions: Sequence[Event]) -> list[Event]:
    """Order one poll's events: ``session.created`` first, then the interactions' events, then
    ``session.updated`` (a close comes after what the session did before it)."""
    created = [e for e in session if e.type is EventType.SESSION_CREATED]
    updated = [e for e in session if e.type is not EventType.SESSION_CREATED]
    return [*created, *interactions, *updated]
