"""One polling cycle of one watched Service: find what moved, poll exactly that.

For ``all_sessions`` the Service's Sessions list is read every cycle and fed to the planner.
An explicit ``sessions:`` list uses the Sessions list too when that is cheaper than polling
every listed session (the listing costs one request per ``page_size`` sessions of the Service).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from poller.detect.planner import Planned, PlanSettings, cycle_budget, plan_explicit, plan_listed
from poller.errors import CredentialsError, FencedError, SourceError
from poller.observe import metrics
from poller.record import Record
from poller.state.base import StateStore
from poller.twilio.records import Session
from poller.watch.poll import PollOutcome, SessionPoller

log = structlog.get_logger(__name__)


class SessionSource(Protocol):
    async def list_sessions(self, service_sid: str) -> list[Session]: ...


class WatchLike(Protocol):
    @property
    def service_sid(self) -> str: ...
    @property
    def sessions(self) -> tuple[str, ...]: ...
    @property
    def all_sessions(self) -> bool: ...


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class CycleResult(Record):
    """One cycle of a Service in numbers: polls planned, ok and failed, events, reasons."""

    service_sid: str
    planned: int
    ok: int
    failed: int
    events: int
    listing_failed: bool = False
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        """Twilio answered: the listing worked and not every poll failed.

        One session that keeps failing (counted in its own metrics and logs) must not make
        the whole daemon unready.
        """
        return not self.listing_failed and (self.failed == 0 or self.ok > 0)


class ServiceCycle:
    """Plan and run the polls of one Service, cycle after cycle (keeps what it learns)."""

    def __init__(
        self,
        watch: WatchLike,
        source: SessionSource,
        poller: SessionPoller,
        store: StateStore,
        settings: PlanSettings,
        *,
        page_size: int,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
        owns: Callable[[str], bool] = lambda _service_sid: True,
    ) -> None:
        """``owns``: whether this replica still owns the Service (asked before each request)."""
        self.watch = watch
        self._source = source
        self._poller = poller
        self._store = store
        self._settings = settings
        self._page_size = page_size
        self._clock = clock
        self._concurrency = max(1, concurrency)
        self._owns = owns
        self._service_size: int | None = None  # sessions in the Service at the last listing

    def _listing_pays(self) -> bool:
        """For an explicit list: is reading the Sessions list cheaper than polling them all?"""
        if self.watch.all_sessions:
            return True
        wanted = len(self.watch.sessions)
        if self._service_size is None:
            return wanted >= 10
        return math.ceil(max(1, self._service_size) / self._page_size) < wanted // 2

    def _still_owned(self) -> None:
        """Go no further once the Service is another replica's (a lapsed or lost lease)."""
        sid = self.watch.service_sid
        if not self._owns(sid):
            raise FencedError(f"this replica no longer owns {sid}: the cycle stopped")

    async def plan(self, *, everything: bool = False) -> list[Planned]:
        self._still_owned()
        now = self._clock()
        sid = self.watch.service_sid
        states = {s.session_sid: s for s in await self._store.sessions(sid)}
        if not self._listing_pays():
            return plan_explicit(
                sid, self.watch.sessions, states, settings=self._settings, everything=everything
            )
        listed = await self._source.list_sessions(sid)
        self._service_size = len(listed)
        started_at: float | None = None
        if self.watch.all_sessions:
            started_at = await self._store.watch_begun(sid)
            if started_at is None:
                shown = {s.sid: (s.activity_marker, s.date_last_interaction) for s in listed}
                await self._store.begin_watch(
                    sid,
                    [s.sid for s in listed],
                    now,
                    listed=shown,
                    fingerprints={s.sid: s.fingerprint for s in listed},
                )
                states = {s.session_sid: s for s in await self._store.sessions(sid)}
        only = None if self.watch.all_sessions else frozenset(self.watch.sessions)
        pages = math.ceil(max(1, len(listed)) / self._page_size)
        return plan_listed(
            sid,
            listed,
            states,
            watch_started_at=started_at,
            now=now,
            settings=self._settings,
            only=only,
            everything=everything,
            budget=None if everything else cycle_budget(self._settings, pages),
        )

    async def run(self, *, everything: bool = False) -> CycleResult:
        """Poll what moved (``everything``: every session that is not gone)."""
        sid = self.watch.service_sid
        with structlog.contextvars.bound_contextvars(service_sid=sid):
            try:
                planned = await self.plan(everything=everything)
            except CredentialsError:
                raise
            except SourceError as exc:
                log.warning("session_list_failed", error=str(exc))
                return CycleResult(sid, 0, 0, 0, 0, listing_failed=True)
            before = await self._store.baseline_counts(sid)
            outcomes = await self._poll_all(planned)
            after = await self._store.baseline_counts(sid)
            report_baseline(before, after, self._settings.interval_seconds)
        reasons: dict[str, int] = {}
        for p in planned:
            reasons[p.reason] = reasons.get(p.reason, 0) + 1
        result = CycleResult(
            sid,
            planned=len(planned),
            ok=sum(o.ok for o in outcomes),
            failed=sum(1 for o in outcomes if not o.ok and not o.gone),
            events=sum(o.events for o in outcomes),
            reasons=reasons,
        )
        metrics.WATCHED_SESSIONS.set(await self._store.watched_count())
        metrics.BASELINE_PENDING.set((await self._store.baseline_counts())[1])
        log.debug("cycle_finished", planned=result.planned, failed=result.failed, **reasons)
        return result

    async def _poll_all(self, planned: list[Planned]) -> list[PollOutcome]:
        """Poll in plan order, ``concurrency`` at a time.

        A poll starts only when a worker takes it, so its timeout never counts the time it
        waited behind the rest of the cycle for the rate limiter.
        """
        queue = iter(planned)
        outcomes: list[PollOutcome] = []

        async def worker() -> None:
            for p in queue:
                self._still_owned()
                outcomes.append(await self._poll(p))

        workers = [asyncio.ensure_future(worker()) for _ in range(self._concurrency)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            # One poll let an error through (credentials, the state): stop the others.
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        return outcomes

    async def _poll(self, p: Planned) -> PollOutcome:
        session = p.session
        return await self._poller.poll(
            p.service_sid,
            p.session_sid,
            new_traffic=p.new_traffic,
            activity_marker=p.marker,
            status=session.status if session else None,
            final=p.final,
            session=session,
        )


def report_baseline(before: tuple[int, int], after: tuple[int, int], interval: float) -> None:
    """Say once per cycle how a baseline goes: done, left and the time left at this pace.

    ``before``, ``after``: (baselined, not yet baselined) around the cycle's polls. Silent
    when nothing waited for a baseline before or after.
    """
    done, left = after
    if left == 0 and before[1] == 0:
        return
    per_cycle = done - before[0]
    eta = math.ceil(left / per_cycle) * interval if per_cycle > 0 else None
    log.info("baseline_progress", done=done, left=left, eta_seconds=eta)
