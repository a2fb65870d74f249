"""The state interface every backend implements (as APScheduler 3's ``BaseJobStore``).

Three sides: :class:`SessionStore` (watches, sessions, the interactions known in each, their
session fingerprints, Slack threads, sink pacing), :class:`Outbox` (one row per (event, sink)
until the sink accepts it) and ``poller.state.history.History`` (events and attempts kept after
delivery, replay). :class:`StateStore` is all three, plus the lifecycle (``close``, ``lost``,
``shift_due_times``, ``summary``); ``poller.state.open.open_store`` opens one.

Every method is a coroutine: a backend may do real I/O (a network database) in any of them.
A backend guarantees what each docstring says and nothing more; "one transaction" means
another caller (or a crash) sees either all of the call's writes or none of them. Times are
Unix seconds (float). A backend's errors are ``StateError`` (``poller.errors``), never its
driver's own exceptions.

Each (sink, session) pair is a queue, delivered strictly in enqueue order: only the first
pending row of a queue can be due, and a queue never waits for another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

from poller.events import Event
from poller.state.history import Attempt, History
from poller.state.models import (
    DeadLetter,
    Delivery,
    DisabledSink,
    FailingSink,
    SessionState,
    StoredSession,
)
from poller.twilio.records import Fingerprint, SessionFingerprint

if TYPE_CHECKING:
    from poller.state.views import OutboxSummary, Summary

RowState = Literal["pending", "dead"]


class SessionStore(ABC):
    """The session side: what is watched and what is known of it."""

    # watches (all_sessions watches of a Service)

    @abstractmethod
    async def watch_begun(self, service_sid: str) -> float | None:
        """Return when watching ``service_sid`` began, or None if it never did."""

    @abstractmethod
    async def watched_services(self) -> list[str]:
        """Return the Services whose ``all_sessions`` watch has begun."""

    @abstractmethod
    async def end_watch(self, service_sid: str) -> None:
        """Forget when watching ``service_sid`` began (watching it again begins anew)."""

    @abstractmethod
    async def begin_watch(
        self,
        service_sid: str,
        session_sids: Sequence[str],
        now: float,
        *,
        listed: Mapping[str, tuple[str, str | None]] | None = None,
        fingerprints: Mapping[str, SessionFingerprint] | None = None,
    ) -> float:
        """Record that the watch began with these sessions (to baseline), in ONE transaction.

        What a Service held when its watch began is "what already exists": those sessions are
        baselined, whatever the clocks say. ``listed``: what the listing showed of each
        session, ``(activity marker, date_last_interaction)``; the marker tells activity
        before the baseline, the date splits the baseline from the events (see
        ``SessionState.watch_last_interaction``). ``fingerprints``: each listed Session's own
        fingerprint, stored read at ``now``. Only the first call records anything (later calls
        change nothing); every call returns when the watch began (the first call's ``now``).
        """

    # sessions

    @abstractmethod
    async def sessions(self, service_sid: str | None = None) -> list[SessionState]:
        """Return every stored session (of one Service), gone ones included, by SID."""

    @abstractmethod
    async def baseline_counts(self, service_sid: str | None = None) -> tuple[int, int]:
        """Return (baselined, not yet baselined) of the watched sessions (of one Service)."""

    @abstractmethod
    async def watched_count(self) -> int:
        """Return how many stored sessions are watched (not gone)."""

    @abstractmethod
    async def ensure_session(
        self, service_sid: str, session_sid: str, *, new_traffic: bool, now: float
    ) -> SessionState:
        """Return the session, tracking it first if it is new, reviving it if it is gone.

        ``new_traffic`` and ``now`` (its ``added_at``) count only for a new session; a tracked
        and watched session is returned unchanged.
        """

    @abstractmethod
    async def known(self, session_sid: str) -> dict[str, Fingerprint]:
        """Return the fingerprint of every interaction known in the session, by SID."""

    @abstractmethod
    async def session_fingerprint(self, session_sid: str) -> StoredSession | None:
        """Return the session's stored fingerprint (None: its record was never seen)."""

    @abstractmethod
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
        """Record one successful poll in ONE transaction: known set, session row and outbox.

        After a crash the known set and the outbox always agree: an event is either not yet
        detected, or waiting for every sink it goes to.

        The known set becomes ``known | fetched`` (the fetched fingerprint winning): an
        interaction a listing lacked stays known, so when it comes back it is an update, never
        new again; it shrinks only when the session is pruned (:meth:`prune`). The session is
        tracked if it was not, baselined with no failures and ``last_success_at = now``, and its
        ``activity_marker``, ``status`` and ``unsettled_until`` become the values given. Each
        event is stored with one pending outbox row per sink it goes to, enqueued (and due) at
        ``now``; an event already in the outbox (re-detected after a crash) adds nothing, and
        an event going to no sink is not stored. ``sinks`` must be a sequence of names, never a
        ``str`` (TypeError).

        ``known``: the known set as :meth:`known` returned it for this poll, so a backend need
        not read it again (the state has one writer, and one session is never polled twice at
        once); None reads it inside the transaction. ``session_fingerprint``: the Session
        record's fingerprint as this poll saw it, stored (read at ``now``) when given.
        """

    @abstractmethod
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
        """Record a successful poll that found exactly the known set, in ONE transaction.

        The same as :meth:`commit_poll` with ``fetched`` equal to the known set and no
        events: the session row (and the fingerprint when given) only.
        """

    @abstractmethod
    async def record_failure(self, session_sid: str, error: str, now: float) -> None:
        """Count one more failed poll in a row and keep a short form of ``error``.

        ``error`` is ``str(exc)`` of a poller error (which never holds a secret), kept on one
        line cut to a status display's length (``models.short_error``); ``last_failure_at``
        becomes ``now``. A session the state does not know is ignored.
        """

    @abstractmethod
    async def revive_session(self, session_sid: str) -> None:
        """Watch a gone session again (it is polled; a 404 marks it gone again)."""

    @abstractmethod
    async def mark_session_gone(self, session_sid: str, now: float) -> None:
        """Note that the session is closed, deleted or unwatched (the first ``now`` counts)."""

    @abstractmethod
    async def prune(self, now: float, grace_seconds: float) -> int:
        """Forget sessions gone longer than ``grace_seconds`` with nothing left to deliver.

        ONE transaction; a pruned session takes its known interactions, its fingerprint and
        its Slack threads with it. Returns how many sessions went.
        """

    # Slack threads (Web API mode)

    @abstractmethod
    async def thread_ts(self, sink: str, session_sid: str) -> str | None:
        """Return the ``ts`` of the thread ``sink`` keeps for the session, if any."""

    @abstractmethod
    async def set_thread_ts(self, sink: str, session_sid: str, ts: str) -> None:
        """Remember (or replace) the thread ``sink`` keeps for the session."""

    # sink pacing (kept across runs: ``poller once`` from cron)

    @abstractmethod
    async def sink_pace(self, sink: str) -> tuple[float, float] | None:
        """Return ``(not_before, set_at)``: no post of ``sink`` before ``not_before``."""

    @abstractmethod
    async def set_sink_pace(self, sink: str, *, not_before: float, now: float) -> None:
        """Record that ``sink`` must not post before ``not_before`` (decided at ``now``)."""


class Outbox(ABC):
    """The outbox side: one row per (event, sink), pending or dead, until the sink accepts it."""

    @abstractmethod
    async def due(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        """Return up to ``limit`` deliveries of ``sink`` ready now, in enqueue order.

        Only the first pending row of each (sink, session) queue can be due, when its
        ``next_attempt_at`` <= ``now`` (``now=None`` ignores timers). Dead rows never block a
        queue. ``limit`` <= 0 returns nothing.
        """

    @abstractmethod
    async def backlog(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        """Return up to ``limit`` pending deliveries of ``sink``, whole queues, in enqueue order.

        Every pending row of each queue whose head is due (``now=None``: all), for sinks that
        send a backlog as one digest; a digest keeps each session's order inside.
        """

    @abstractmethod
    async def ack(
        self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
    ) -> None:
        """Delete delivered rows; ONE transaction.

        ``history`` None: each event no other row still needs is deleted with them (nothing
        is kept). Otherwise these attempts (of the acked rows) are kept, and an event no other
        row still needs stays, done at the latest ``at`` among them (``History``).
        """

    @abstractmethod
    async def retry_later(
        self,
        delivery_id: int,
        *,
        next_attempt_at: float,
        error: str,
        status: int | None,
        attempt: Attempt | None = None,
    ) -> None:
        """Count one failed attempt and hold the row (and its queue) until ``next_attempt_at``.

        A row that is not pending (acked, dead) is left as it is. ``attempt``: kept in the
        history, in the same transaction.
        """

    @abstractmethod
    async def dead_letter(
        self,
        delivery_id: int,
        *,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> None:
        """Count one failed attempt and give up (``dead_at = now``): it stops blocking its queue.

        A row that is not pending is left as it is. ``attempt``: kept in the history, in the
        same transaction.
        """

    @abstractmethod
    async def dead_letter_other_sinks(self, sinks: Sequence[str], *, now: float) -> int:
        """Dead-letter what is pending for sinks not in ``sinks``; return how many rows.

        ONE transaction, which also forgets that those sinks were disabled. A sink removed
        from the config can take nothing: its events are kept, visible in ``poller outbox
        list``, and ``poller outbox retry --sink NAME`` requeues them if the sink comes back.
        """

    @abstractmethod
    async def record_sink_disabled(
        self, sink: str, *, status: int | None, reason: str, now: float
    ) -> None:
        """Note that ``sink`` was disabled by an answer; a noted sink keeps its ``since``."""

    @abstractmethod
    async def disabled_sinks(self, sink: str | None = None) -> list[DisabledSink]:
        """Return the sinks noted as disabled (one, or all), by name."""

    @abstractmethod
    async def clear_sink_disabled(self, sink: str | None = None) -> list[DisabledSink]:
        """Forget that ``sink`` (None: every sink) was disabled; return what was noted."""

    @abstractmethod
    async def dead_letters(self, sink: str | None = None) -> list[DeadLetter]:
        """Return dead-lettered deliveries (of one sink, or all), oldest first."""

    @abstractmethod
    async def requeue(
        self, ids: Sequence[int] | None = None, *, sink: str | None = None, now: float
    ) -> int:
        """Make dead rows pending again, due at ``now`` with no attempts; return how many.

        ``ids=None`` means every dead row (of ``sink`` when given); ONE transaction.
        """

    @abstractmethod
    async def purge(self, ids: Sequence[int] | None = None, *, sink: str | None = None) -> int:
        """Delete dead rows (and the events nothing needs any more); return how many.

        ``ids=None`` means every dead row (of ``sink`` when given); ONE transaction. An event
        left without rows that has kept attempts stays in the history, done now (wall clock);
        one without is deleted.
        """

    @abstractmethod
    async def failing_sinks(self, sink: str | None = None) -> list[FailingSink]:
        """Return, per sink (by name), its pending deliveries that failed and wait for a retry."""

    @abstractmethod
    async def pending_count(self, sink: str | None = None) -> int:
        """Return how many rows are pending (of one sink, or all)."""

    @abstractmethod
    async def oldest_pending_enqueued_at(self) -> float | None:
        """Return when the oldest pending row was enqueued (None: nothing is pending)."""

    @abstractmethod
    async def counts_by_sink(self, state: RowState) -> dict[str, int]:
        """Return ``{sink: rows}`` of the rows in ``state``, by sink name."""

    async def outbox_summary(self, now: float) -> OutboxSummary:
        """Return the outbox part of :meth:`StateStore.summary`."""
        from poller.state.views import OutboxSummary  # see poller.state.views

        oldest = await self.oldest_pending_enqueued_at()
        return OutboxSummary(
            pending=await self.counts_by_sink("pending"),
            dead=await self.counts_by_sink("dead"),
            oldest_pending_age_seconds=None if oldest is None else max(0.0, now - oldest),
            disabled=tuple(await self.disabled_sinks()),
        )


class StateStore(SessionStore, Outbox, History):
    """A whole state backend: all three sides, opened by ``open_store`` and closed once."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the state is kept, for messages: a path, or a URL without its password."""

    @abstractmethod
    async def shift_due_times(self, seconds: float) -> int:
        """Move every pending row's due and enqueue times by ``seconds`` (the wall clock stepped).

        What waited keeps waiting what was left of its wait, and what was young stays young
        (ages, ``max_age_seconds``). Sessions' settle windows are not moved: each poll
        recomputes them from Twilio's own dates. ONE transaction; returns the rows moved.
        """

    @abstractmethod
    async def summary(self, now: float | None = None) -> Summary:
        """Return an overview for ``poller state show`` (``now``: the wall clock by default)."""

    @abstractmethod
    async def lost(self) -> str | None:
        """Say why the state is gone or replaced under us (None: it is still there)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the state (connections, locks); closing twice is harmless."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
