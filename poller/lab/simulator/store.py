"""``ProxyStore``: the simulator's data, its clock, SIDs, lookups and reads.

``ProxyState`` (model.py) adds every change. Dates are whole Unix seconds; see model.py for
how changes stamp them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from poller.lab.simulator.records import (
    OrderedIndex,
    PageSlice,
    SimInteraction,
    SimService,
    SimSession,
    progression,
)
from poller.twilio.records import Fingerprint


class SimulatorError(ValueError):
    """A request the simulated Proxy refuses (bad argument, closed session)."""


class UnknownResourceError(LookupError):
    """No such Service, Session or Interaction."""


class Change(NamedTuple):
    """One entry of the change log: an interaction and the fingerprint a change gave it."""

    interaction_sid: str
    fingerprint: Fingerprint


class ProxyStore:
    """Services, Sessions and Interactions in memory, with the reads the HTTP API needs."""

    def __init__(
        self,
        *,
        seed: int | str | None = None,
        clock: Callable[[], float] = time.time,
        account_sid: str | None = None,
        shuffle: bool = False,
        strict_session_dates: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        self._ids = random.Random(None if seed is None else f"{seed}:ids")
        self.rng = random.Random(None if seed is None else f"{seed}:faults")
        self._clock = clock
        self.clock_offset = 0
        self._last_now = 0
        self.account_sid = account_sid or self.new_sid("AC")
        self.base_url = "https://proxy.twilio.com"
        self.shuffle = shuffle
        self.strict_session_dates = strict_session_dates
        self._services: dict[str, SimService] = {}
        self._sessions: dict[str, SimSession] = {}
        self._interactions: dict[str, SimInteraction] = {}
        self._changes: list[Change] = []
        self._owners: dict[str, tuple[str, str]] = {}

    def sizes(self) -> dict[str, int]:
        """How many services, sessions, interactions and changes there are."""
        with self._lock:
            return {
                "services": len(self._services),
                "sessions": len(self._sessions),
                "interactions": len(self._interactions),
                "changes": len(self._changes),
                "clock_offset": self.clock_offset,
            }

    # -- clock and ids -----------------------------------------------------------------------

    def now(self) -> int:
        """The simulated time in whole Unix seconds (never goes back)."""
        with self._lock:
            current = max(int(self._clock()) + self.clock_offset, self._last_now)
            self._last_now = current
            return current

    def _stamp(
        self, session: SimSession, *, after: int | None = None, at: int | None = None
    ) -> int:
        """A date for a change of ``session``: now (or ``at``), and later than ``after``.

        When that is in the future, the simulated clock jumps forward to it.
        """
        now = self.now()
        stamp = now if at is None else min(max(at, session.last_stamp), now)
        if self.strict_session_dates:
            after = max(after or 0, session.last_stamp)
        if after is not None and stamp <= after:
            stamp = after + 1
        if stamp > now:
            self.clock_offset += stamp - now
            self._last_now = stamp
        session.last_stamp = max(session.last_stamp, stamp)
        return stamp

    def advance_clock(self, seconds: int) -> int:
        """Move the simulated clock forward by ``seconds``; return the new now."""
        if seconds < 0:
            raise SimulatorError("seconds: the clock only moves forward")
        with self._lock:
            self.clock_offset += seconds
            return self.now()

    def new_sid(self, prefix: str) -> str:
        """A new SID: ``prefix`` and 32 hex digits (from the seeded RNG)."""
        with self._lock:
            return f"{prefix}{self._ids.getrandbits(128):032x}"

    def _sid(self, prefix: str) -> str:
        # The lock is held by the caller.
        return f"{prefix}{self._ids.getrandbits(128):032x}"

    def fetch_session_service(self, session_sid: str) -> str:
        """The Service SID of a session."""
        with self._lock:
            return self._session(session_sid).service_sid

    def session_sids(self, service_sid: str | None = None) -> list[str]:
        with self._lock:
            return [
                sid
                for sid, s in self._sessions.items()
                if service_sid is None or s.service_sid == service_sid
            ]

    def service_sids(self) -> list[str]:
        with self._lock:
            return list(self._services)

    def interaction_sids(self, session_sid: str | None = None) -> list[str]:
        with self._lock:
            if session_sid is None:
                return list(self._interactions)
            return [i.sid for i in self._session(session_sid).interactions]

    def owner(self, interaction_sid: str) -> tuple[str, str]:
        """(service_sid, session_sid) of an interaction, even after it was deleted."""
        with self._lock:
            try:
                return self._owners[interaction_sid]
            except KeyError:
                raise UnknownResourceError(f"interaction {interaction_sid} never existed") from None

    def change_log(self, since: int = 0) -> list[Change]:
        """Every creation and status change made, in order, from index ``since``."""
        with self._lock:
            return self._changes[since:]

    # -- reads (the HTTP API) ----------------------------------------------------------------

    def _service(self, service_sid: str) -> SimService:
        service = self._services.get(service_sid)
        if service is None:
            raise UnknownResourceError(f"service {service_sid} not found")
        return service

    def _session(self, session_sid: str, service_sid: str | None = None) -> SimSession:
        session = self._sessions.get(session_sid)
        if session is None and service_sid is not None:
            by_name = self._service(service_sid).unique_names.get(session_sid)
            session = self._sessions.get(by_name) if by_name else None
        if session is None or (service_sid is not None and session.service_sid != service_sid):
            raise UnknownResourceError(f"session {session_sid} not found")
        return session

    def _interaction(self, interaction_sid: str) -> SimInteraction:
        interaction = self._interactions.get(interaction_sid)
        if interaction is None:
            raise UnknownResourceError(f"interaction {interaction_sid} not found")
        return interaction

    def fetch_session(self, service_sid: str, session_sid: str) -> dict[str, Any]:
        with self._lock:
            session = self._session(session_sid, service_sid)
            return session.to_json(self.account_sid, self.base_url)

    def fetch_interaction(
        self, service_sid: str, session_sid: str, interaction_sid: str
    ) -> dict[str, Any]:
        with self._lock:
            session = self._session(session_sid, service_sid)
            interaction = session.interactions.get(interaction_sid)
            if interaction is None:
                raise UnknownResourceError(f"interaction {interaction_sid} not found")
            return interaction.to_json(self.account_sid, self.base_url)

    def page_sessions(
        self,
        service_sid: str,
        size: int,
        *,
        offset: int = 0,
        older_than: int | None = None,
        newer_than: int | None = None,
    ) -> tuple[list[dict[str, Any]], PageSlice[SimSession]]:
        with self._lock:
            index = self._service(service_sid).sessions
            return self._render_page(index, size, offset, older_than, newer_than)

    def page_interactions(
        self,
        service_sid: str,
        session_sid: str,
        size: int,
        *,
        offset: int = 0,
        older_than: int | None = None,
        newer_than: int | None = None,
    ) -> tuple[list[dict[str, Any]], PageSlice[SimInteraction]]:
        with self._lock:
            index = self._session(session_sid, service_sid).interactions
            return self._render_page(index, size, offset, older_than, newer_than)

    def _render_page(
        self,
        index: OrderedIndex[Any],
        size: int,
        offset: int,
        older_than: int | None,
        newer_than: int | None,
    ) -> tuple[list[dict[str, Any]], PageSlice[Any]]:
        page = index.page(size, offset=offset, older_than=older_than, newer_than=newer_than)
        records = [item.to_json(self.account_sid, self.base_url) for item in page.items]
        if self.shuffle:
            self.rng.shuffle(records)
        return records, page

    def unsettled(self, sids: Iterable[str]) -> list[str]:
        """The interactions among ``sids`` that can still advance."""
        with self._lock:
            result = []
            for sid in sids:
                interaction = self._interactions.get(sid)
                if interaction is None:
                    continue
                for side in ("outbound", "inbound"):
                    steps = progression(interaction.type, side)
                    current = getattr(interaction, f"{side}_status")
                    if current in steps and current != steps[-1]:
                        result.append(sid)
                        break
            return result
