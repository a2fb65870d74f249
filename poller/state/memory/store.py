"""``MemoryStore``: the whole state in plain dicts, for unit tests.

It keeps nothing across restarts and is not for production: a crash loses every event not yet
delivered. It has the semantics of the SQLite backend (the contract suite in ``tests/state/``
holds both to them); a call that must be one transaction checks its input before it changes
anything, so a refused call leaves the state as it was.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from poller.errors import StateError
from poller.events import Event
from poller.state.base import StateStore
from poller.state.memory.history import MemoryHistory
from poller.state.models import SessionState, StoredSession, short_error
from poller.state.views import SessionCounts, Summary
from poller.twilio.records import Fingerprint, SessionFingerprint

BACKEND = "memory"
LOCATION = "memory (this process only)"
# Nothing is stored, so nothing migrates: the layout is always this one.
SCHEMA_VERSION = 0


@dataclass
class SessionTables:
    """Everything the sessions side holds, by session SID unless said otherwise."""

    watches: dict[str, float] = field(default_factory=dict)  # service SID -> started at
    sessions: dict[str, SessionState] = field(default_factory=dict)
    known: dict[str, dict[str, Fingerprint]] = field(default_factory=dict)
    fingerprints: dict[str, StoredSession] = field(default_factory=dict)
    threads: dict[tuple[str, str], str] = field(default_factory=dict)  # (sink, session) -> ts
    pacing: dict[str, tuple[float, float]] = field(default_factory=dict)


class MemoryStore(MemoryHistory, StateStore):
    """The poller's state held in this process only: lost when it ends; not for production.

    Times are Unix seconds. Every call runs to its end without awaiting, so no other task sees
    half of it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._state: SessionTables | None = SessionTables()

    @property
    def _tables(self) -> SessionTables:
        if self._state is None:
            raise StateError("memory state: the store is closed")
        return self._state

    @property
    def location(self) -> str:
        return LOCATION

    async def lost(self) -> str | None:
        """Nothing can take the state from under a process that holds it: always None."""
        return None

    async def close(self) -> None:
        """Drop everything; any later call raises StateError. Closing twice is harmless."""
        self._state = None
        self._outbox = None

    # watches

    async def watch_begun(self, service_sid: str) -> float | None:
        """Return when watching ``service_sid`` began, or None if it never did."""
        return self._tables.watches.get(service_sid)

    async def watched_services(self) -> list[str]:
        """Return the Services whose ``all_sessions`` watch has begun."""
        return sorted(self._tables.watches)

    async def end_watch(self, service_sid: str) -> None:
        """Forget when watching ``service_sid`` began (watching it again begins anew)."""
        self._tables.watches.pop(service_sid, None)

    async def begin_watch(
        self,
        service_sid: str,
        session_sids: Sequence[str],
        now: float,
        *,
        listed: Mapping[str, tuple[str, str | None]] | None = None,
        fingerprints: Mapping[str, SessionFingerprint] | None = None,
    ) -> float:
        """Record that the watch began with these sessions (to baseline); see the SQLite store."""
        tables = self._tables
        if service_sid in tables.watches:
            return tables.watches[service_sid]
        untracked = set(fingerprints or {}) - set(session_sids) - set(tables.sessions)
        if untracked:
            # As SQLite's foreign key refuses it: a fingerprint belongs to a tracked session.
            raise StateError(f"memory state: fingerprint of untracked session {min(untracked)}")
        tables.watches[service_sid] = now
        shown = listed or {}
        for sid in session_sids:
            marker, last = shown.get(sid, (None, None))
            tables.sessions.setdefault(
                sid,
                _new_session(
                    service_sid,
                    sid,
                    activity_marker=marker,
                    watch_listed=sid in shown,
                    watch_last_interaction=last,
                ),
            )
        for sid, fingerprint in (fingerprints or {}).items():
            tables.fingerprints[sid] = StoredSession(SessionFingerprint._make(fingerprint), now)
        return now

    # sessions

    async def sessions(self, service_sid: str | None = None) -> list[SessionState]:
        """Return every stored session (of one Service), gone ones included, by SID."""
        chosen = self._tables.sessions
        return [
            chosen[sid] for sid in sorted(chosen) if service_sid in (None, chosen[sid].service_sid)
        ]

    async def baseline_counts(self, service_sid: str | None = None) -> tuple[int, int]:
        """Return (baselined, not yet baselined) of the watched sessions (of one Service)."""
        watched = [s for s in await self.sessions(service_sid) if s.gone_at is None]
        baselined = sum(1 for s in watched if s.baselined)
        return baselined, len(watched) - baselined

    async def watched_count(self) -> int:
        """Return how many stored sessions are watched (not gone)."""
        return sum(1 for s in self._tables.sessions.values() if s.gone_at is None)

    async def ensure_session(
        self, service_sid: str, session_sid: str, *, new_traffic: bool, now: float
    ) -> SessionState:
        """Track a session (``new_traffic`` counts only when it is new); revive a gone one."""
        sessions = self._tables.sessions
        known = sessions.get(session_sid)
        if known is None:
            known = _new_session(service_sid, session_sid, new_traffic=new_traffic)
        sessions[session_sid] = replace(known, gone_at=None)
        return sessions[session_sid]

    async def known(self, session_sid: str) -> dict[str, Fingerprint]:
        """Return the fingerprint of every interaction known in the session, by SID."""
        return dict(self._tables.known.get(session_sid, {}))

    async def session_fingerprint(self, session_sid: str) -> StoredSession | None:
        """Return the session's stored fingerprint (None: its record was never seen)."""
        return self._tables.fingerprints.get(session_sid)

    async def commit_poll(
        self,
        service_sid: str,
        session_sid: str,
        *,
        fetched: Mapping[str, Fingerprint],
        events: Sequence[tuple[Event, Sequence[str]]],
        now: float,
        activity_marker: str | None = None,
        status: str | None = None,
        unsettled_until: float | None = None,
        known: Mapping[str, Fingerprint] | None = None,
        session_fingerprint: SessionFingerprint | None = None,
    ) -> None:
        """Record one successful poll as one change: the known set grows by ``fetched``.

        The same contract as the SQLite store's: the events are checked before anything is
        written, so a refused commit changes nothing. ``known`` is not needed here (the known
        set is at hand) and is ignored.
        """
        delta = {sid: Fingerprint._make(fp) for sid, fp in fetched.items()}
        self._enqueue(events, now)
        self._record_success(
            service_sid, session_sid, now, activity_marker, status, unsettled_until
        )
        self._tables.known.setdefault(session_sid, {}).update(delta)
        if session_fingerprint is not None:
            self._write_fingerprint(session_sid, session_fingerprint, now)

    async def commit_unchanged(
        self,
        service_sid: str,
        session_sid: str,
        *,
        now: float,
        activity_marker: str | None = None,
        status: str | None = None,
        unsettled_until: float | None = None,
        session_fingerprint: SessionFingerprint | None = None,
    ) -> None:
        """Record a successful poll that found exactly the known set: the session row only."""
        self._record_success(
            service_sid, session_sid, now, activity_marker, status, unsettled_until
        )
        if session_fingerprint is not None:
            self._write_fingerprint(session_sid, session_fingerprint, now)

    async def record_failure(self, session_sid: str, error: str, now: float) -> None:
        """Count one more failed poll in a row and keep a short form of ``error``."""
        sessions = self._tables.sessions
        if session_sid in sessions:
            state = sessions[session_sid]
            sessions[session_sid] = replace(
                state,
                consecutive_failures=state.consecutive_failures + 1,
                last_error=short_error(error),
                last_failure_at=now,
            )

    async def revive_session(self, session_sid: str) -> None:
        """Watch a gone session again (it is polled; a 404 marks it gone again)."""
        state = self._tables.sessions.get(session_sid)
        if state is not None:
            self._tables.sessions[session_sid] = replace(state, gone_at=None)

    async def mark_session_gone(self, session_sid: str, now: float) -> None:
        """Note that the session is closed, deleted or unwatched (the first time counts)."""
        state = self._tables.sessions.get(session_sid)
        if state is not None and state.gone_at is None:
            self._tables.sessions[session_sid] = replace(state, gone_at=now)

    async def prune(self, now: float, grace_seconds: float) -> int:
        """Forget sessions gone longer than ``grace_seconds`` with nothing left to deliver."""
        tables, busy = self._tables, self._pending_sessions()
        doomed = [
            sid
            for sid, state in tables.sessions.items()
            if state.gone_at is not None and state.gone_at < now - grace_seconds and sid not in busy
        ]
        for sid in doomed:
            del tables.sessions[sid]
            tables.known.pop(sid, None)
            tables.fingerprints.pop(sid, None)
        tables.threads = {key: ts for key, ts in tables.threads.items() if key[1] not in doomed}
        return len(doomed)

    # slack threads (Web API mode)

    async def thread_ts(self, sink: str, session_sid: str) -> str | None:
        return self._tables.threads.get((sink, session_sid))

    async def set_thread_ts(self, sink: str, session_sid: str, ts: str) -> None:
        self._tables.threads[(sink, session_sid)] = ts

    # sink pacing

    async def sink_pace(self, sink: str) -> tuple[float, float] | None:
        """Return ``(not_before, set_at)``: no post of ``sink`` before ``not_before``."""
        return self._tables.pacing.get(sink)

    async def set_sink_pace(self, sink: str, *, not_before: float, now: float) -> None:
        self._tables.pacing[sink] = (not_before, now)

    # introspection

    async def summary(self, now: float | None = None) -> Summary:
        """Return the overview of ``poller state show``."""
        now = time.time() if now is None else now
        tables = self._tables
        watched = [s for s in tables.sessions.values() if s.gone_at is None]
        return Summary(
            backend=BACKEND,
            location=LOCATION,
            schema_version=SCHEMA_VERSION,
            sessions=SessionCounts(
                watched=len(watched),
                baselined=sum(1 for s in watched if s.baselined),
                gone=len(tables.sessions) - len(watched),
                failing=sum(1 for s in watched if s.consecutive_failures > 0),
            ),
            interactions_tracked=sum(len(known) for known in tables.known.values()),
            outbox=await self.outbox_summary(now),
            watches=tuple(sorted(tables.watches.items())),
        )

    def _record_success(
        self,
        service_sid: str,
        session_sid: str,
        now: float,
        activity_marker: str | None,
        status: str | None,
        unsettled_until: float | None,
    ) -> None:
        sessions = self._tables.sessions
        state = sessions.get(session_sid) or _new_session(service_sid, session_sid)
        sessions[session_sid] = replace(
            state,
            baselined=True,
            consecutive_failures=0,
            last_success_at=now,
            activity_marker=activity_marker,
            status=status,
            unsettled_until=unsettled_until,
        )

    def _write_fingerprint(
        self, session_sid: str, fingerprint: SessionFingerprint, now: float
    ) -> None:
        self._tables.fingerprints[session_sid] = StoredSession(
            SessionFingerprint._make(fingerprint), now
        )


def _new_session(
    service_sid: str,
    session_sid: str,
    *,
    new_traffic: bool = False,
    activity_marker: str | None = None,
    watch_listed: bool = False,
    watch_last_interaction: str | None = None,
) -> SessionState:
    return SessionState(
        service_sid=service_sid,
        session_sid=session_sid,
        baselined=False,
        new_traffic=new_traffic,
        last_success_at=None,
        consecutive_failures=0,
        last_error=None,
        activity_marker=activity_marker,
        status=None,
        unsettled_until=None,
        watch_listed=watch_listed,
        watch_last_interaction=watch_last_interaction,
    )
