"""One poll of one session: fetch every page, diff against the state, route, commit.

A poll that fails part-way commits nothing for its session; the next poll starts over from
the same known state, so nothing is lost and nothing is sent twice with different ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import structlog

from poller.detect.diff import Diff, diff, utc_instant
from poller.detect.routing import StoredSinkRouting, route_stored
from poller.errors import CredentialsError, NotFoundError, SourceError
from poller.events import Event
from poller.lab.crashpoints import NO_CRASH, CrashPoints
from poller.observe import metrics
from poller.record import Record
from poller.state.base import StateStore
from poller.state.models import SessionState
from poller.twilio.records import (
    FINAL_SESSION_STATUSES,
    Fingerprint,
    Interaction,
    Session,
    parse_time,
)
from poller.watch.session_sight import SessionFetcher, SessionSights, Sight, in_session_order

if TYPE_CHECKING:
    from poller.config import PollConfig

log = structlog.get_logger(__name__)


class InteractionSource(Protocol):
    async def list_interactions(self, service_sid: str, session_sid: str) -> list[Interaction]: ...


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class PollOutcome(Record):
    """What one poll of a session came to: events found, gone, unsettled, or its error."""

    service_sid: str
    session_sid: str
    ok: bool
    events: int = 0
    gone: bool = False
    unsettled: bool = False
    error: str | None = None
    # The session's status as this poll learnt it (None: not learnt).
    status: str | None = None


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class _Seen(Record):
    """What one poll read: the listing, the known set (read once), their diff, the Session."""

    fetched: list[Interaction]
    known: Mapping[str, Fingerprint]
    found: Diff
    sight: Sight | None


def iso_utc(ts: float) -> str:
    """Format Unix seconds the way Twilio does (``2026-11-27T10:00:00Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SessionPoller:
    """Poll sessions and commit what changed, with its events, in one transaction each.

    ``settings``: the config's ``poll`` section; a watch without the Sessions list fetches
    each Session at least every ``full_sweep_seconds``.
    """

    def __init__(
        self,
        source: InteractionSource,
        store: StateStore,
        settings: PollConfig,
        sinks: Sequence[StoredSinkRouting],
        *,
        clock: Callable[[], float] = time.time,
        on_events: Callable[[], None] | None = None,
        session_source: SessionFetcher | None = None,
        crash: CrashPoints = NO_CRASH,
    ) -> None:
        self._source = source
        self._sights = SessionSights(
            session_source, store, refresh_seconds=settings.full_sweep_seconds
        )
        self._store = store
        self._settings = settings
        self._sinks = sinks
        self._clock = clock
        self._on_events = on_events
        self._crash = crash

    async def poll(
        self,
        service_sid: str,
        session_sid: str,
        *,
        new_traffic: bool = False,
        activity_marker: str | None = None,
        status: str | None = None,
        final: bool = False,
        session: Session | None = None,
    ) -> PollOutcome:
        """Poll one session; never raises for Twilio's errors (they become the outcome).

        ``final``: the session vanished from its Service's list or is closed; after a poll
        that finds nothing left to settle it is marked gone (and pruned after the grace).
        ``session``: the Session as its Service's list showed it (None: not listed; it is
        fetched when worth it, for session events).
        """
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(
            service_sid=service_sid, session_sid=session_sid
        ):
            state = await self._store.ensure_session(
                service_sid, session_sid, new_traffic=new_traffic, now=self._clock()
            )
            outcome = await self._poll(state, activity_marker, status, final, session)
            status = outcome.status or status
            # A closed session can still report status changes (a message queued before the
            # close is delivered after it): it leaves once nothing in it can change.
            leaving = final or status in FINAL_SESSION_STATUSES
            if outcome.ok and leaving and not outcome.unsettled:
                await self._store.mark_session_gone(session_sid, self._clock())
                log.info("session_left", status=status)
        metrics.POLL_DURATION.observe(time.perf_counter() - started)
        metrics.POLLS.labels(
            outcome="ok" if outcome.ok else "gone" if outcome.gone else "error"
        ).inc()
        return outcome

    async def _poll(
        self,
        state: SessionState,
        activity_marker: str | None,
        status: str | None,
        final: bool,
        session: Session | None,
    ) -> PollOutcome:
        service_sid, session_sid = state.service_sid, state.session_sid
        try:
            seen = await self._look(state, session, final)
        except NotFoundError:
            log.info("session_gone")
            await self._store.mark_session_gone(session_sid, self._clock())
            return PollOutcome(service_sid, session_sid, ok=False, gone=True, error="not found")
        except CredentialsError:
            raise  # not this session's problem: the caller stops everything
        except (SourceError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            log.warning("poll_failed", error=error, error_type=type(exc).__name__)
            await self._store.record_failure(session_sid, error, self._clock())
            return PollOutcome(service_sid, session_sid, ok=False, error=error)

        self._crash.reached("after_fetch")
        now = self._clock()
        unsettled_until = self._unsettled_until(seen.fetched, now)
        if seen.sight is not None:
            status = seen.sight.record.status
        events = await self._commit(
            state,
            seen,
            now=now,
            activity_marker=activity_marker,
            status=status,
            unsettled_until=unsettled_until,
        )
        self._crash.reached("after_commit")
        self._report(state, events, seen, now)
        return PollOutcome(
            service_sid,
            session_sid,
            ok=True,
            events=len(events),
            unsettled=unsettled_until is not None,
            status=status,
        )

    async def _look(self, state: SessionState, listed: Session | None, final: bool) -> _Seen:
        """List the interactions, diff them, and see the Session record, within the timeout.

        A Session fetched closed after the listing has it listed once more (see
        :attr:`Sight.closed_since_listing`).
        """
        service_sid, session_sid = state.service_sid, state.session_sid
        async with asyncio.timeout(self._settings.timeout_seconds):
            fetched = await self._source.list_interactions(service_sid, session_sid)
            known = await self._store.known(session_sid)
            found = self._diff(state, known, fetched)
            sight = await self._sights.sight(
                service_sid,
                session_sid,
                listed,
                activity=not found.unchanged,
                final=final,
                now=self._clock(),
            )
            if sight is not None and sight.closed_since_listing:
                fetched = await self._source.list_interactions(service_sid, session_sid)
                found = self._diff(state, known, fetched)
        return _Seen(fetched, known, found, sight)

    def _notifies(self, state: SessionState) -> bool:
        """Whether every change of this session is an event (False: its baseline is due)."""
        return state.baselined or state.new_traffic or self._settings.first_run == "notify_all"

    def _diff(
        self, state: SessionState, known: Mapping[str, Fingerprint], fetched: list[Interaction]
    ) -> Diff:
        notify = self._notifies(state)
        # Listed when the watch began: Twilio's own clock splits the baseline from the events.
        assumed = None if notify or not state.watch_listed else _baseline_of(state, fetched)
        return diff(
            state.service_sid,
            state.session_sid,
            known,
            fetched,
            iso_utc(self._clock()),
            assumed=assumed,
            notify=notify or assumed is not None,
        )

    async def _commit(
        self,
        state: SessionState,
        seen: _Seen,
        *,
        now: float,
        activity_marker: str | None,
        status: str | None,
        unsettled_until: float | None,
    ) -> list[Event]:
        """Commit the poll (its diff, the known set read once); return the events committed.

        The session's own events (``seen.sight``) go around the interactions'
        (:func:`in_session_order`).
        """
        service_sid, session_sid, sight = state.service_sid, state.session_sid, seen.sight
        fingerprint = None if sight is None else sight.to_store()
        around = (
            []
            if sight is None
            else sight.events(
                service_sid,
                created=state.new_traffic and not state.baselined,
                detected_at=iso_utc(now),
            )
        )
        if seen.found.unchanged and not around:
            # Most polls find nothing new: the interactions' rows are not touched.
            await self._store.commit_unchanged(
                service_sid,
                session_sid,
                now=now,
                activity_marker=activity_marker,
                status=status,
                unsettled_until=unsettled_until,
                session_fingerprint=fingerprint,
            )
            return []
        events = in_session_order(around, seen.found.events)
        await self._store.commit_poll(
            service_sid,
            session_sid,
            fetched=seen.found.known_after,
            events=[route_stored(self._sinks, event) for event in events],
            now=now,
            activity_marker=activity_marker,
            status=status,
            unsettled_until=unsettled_until,
            known=seen.known,
            session_fingerprint=fingerprint,
        )
        return events

    def _report(self, state: SessionState, events: list[Event], seen: _Seen, now: float) -> None:
        """Metrics, the wake-up of the delivery loop, and the log line of a committed poll."""
        metrics.LAST_SUCCESSFUL_POLL.set(now)
        for event in events:
            metrics.EVENTS.labels(type=event.type.value).inc()
        if events and self._on_events is not None:
            self._on_events()
        if events:
            log.info("session_changed", events=len(events), interactions=len(seen.fetched))
        elif not state.baselined and not self._notifies(state):
            # debug: a first start baselines thousands; baseline_progress says it per cycle
            log.debug("session_baselined", interactions=len(seen.fetched))

    def _unsettled_until(self, fetched: Sequence[Interaction], now: float) -> float | None:
        """Until when to keep polling for status changes of young, unfinished interactions."""
        settle = self._settings.settle_seconds
        latest: float | None = None
        for interaction in fetched:
            if interaction.is_settled:
                continue
            changed = parse_time(interaction.date_updated) or parse_time(interaction.date_created)
            changed_at = changed.timestamp() if changed else now
            if changed_at + settle > now:
                latest = max(latest or 0.0, changed_at + settle)
        return latest


def _baseline_of(state: SessionState, fetched: Sequence[Interaction]) -> dict[str, Fingerprint]:
    """The interactions of a session listed when its watch began that are its baseline.

    Those created at or before the ``date_last_interaction`` that listing showed (Twilio's
    clock against Twilio's clock; one-second resolution, so one created in that same second
    counts as baseline). No date listed: nothing had happened, every interaction is an event.
    An interaction without a readable creation date is taken as baseline: never notify what
    may have existed.
    """
    cutoff = utc_instant(state.watch_last_interaction)
    baseline: dict[str, Fingerprint] = {}
    for interaction in fetched:
        created = utc_instant(interaction.date_created)
        if created is None or (cutoff is not None and created <= cutoff):
            baseline[interaction.sid] = interaction.fingerprint
    return baseline
