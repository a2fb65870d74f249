"""``poller run``: the daemon.

APScheduler 3.x (``AsyncIOScheduler``, started inside the running loop) fires one cycle job per
watched Service every ``poll.interval_seconds``, with jitter so Services do not fire together,
``max_instances=1`` and ``coalesce`` so a slow cycle is never stacked, and a misfire grace time
of one interval. Deliveries run continuously from the outbox in their own task.

SIGTERM/SIGINT: pause the scheduler, let in-flight cycles and deliveries finish within
``delivery.shutdown_timeout_seconds``, then cancel what is left (a cancelled poll commits
nothing, an unacknowledged delivery stays in the outbox: nothing is lost), close, exit 0.
SIGHUP: reload the config; an invalid one is logged and the old one kept.

Ownership (``poller.replicas``): a cycle runs only for a Service this replica owns, and the
dispatcher sends only those Services' events; a Service gained is polled at once. A clean stop
releases the leases after the drain. A poller alone on its state owns everything.

``cli`` composes the daemon: it opens the state (kept across reloads), and hands over how to
build the App and how to read the config again; nothing here reads the YAML or the
environment.

Clocks. Every duration is measured on the monotonic clock (health ages, deadlines, the
delivery loop's pauses, rate limits, Slack's pacing); the wall clock is for what is stored and
shown. APScheduler 3.x schedules on the wall clock (``datetime.now``) and cannot be given
another: a step back of an hour would hold every job for an hour, a step forward would make
it skip runs as misfired. We keep it, for its jitter, ``max_instances`` and coalescing, and
correct it: a watch task of our own, timed by the event loop's monotonic clock, compares both
clocks every ``WATCH_SECONDS``; on a step (``clock_stepped``, ``poller_clock_steps_total``)
every job is due at once and the outbox's stored due times move by the step, so nothing waits
the step's length and nothing becomes due early. Driving the cycles from a loop of our own
would have meant rewriting what APScheduler does well to fix the one thing it cannot.

The same watch notices a state file that vanished or was replaced (``state_lost``): not ready
any more, stop, exit 1, so that the supervisor restarts the daemon on a state it can keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog
from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from poller.app import App, AppBuilder, retire_removed_sinks, sync_watch
from poller.config import Config
from poller.errors import ConfigError, StateError, StateUnavailableError
from poller.observe import metrics
from poller.observe.health import HealthState
from poller.observe.listener import listener_key, start_http
from poller.observe.logs import configure_logging
from poller.observe.outage import Outage
from poller.observe.sdnotify import Notifier
from poller.observe.status import StatusSource
from poller.replicas.base import Ownership, SoleOwner
from poller.replicas.open import watched_services
from poller.state.base import StateStore
from poller.state.pruning import prune_state
from poller.watch.clockwatch import ClockWatch
from poller.watch.cycle import ServiceCycle
from poller.watch.job import CycleJob

log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 5.0
# The clock and the state file are checked this often (monotonic): a step is corrected, and a
# lost state noticed, well within one heartbeat.
WATCH_SECONDS = 1.0
PRUNE_SECONDS = 3600.0
RESTART_PAUSE_SECONDS = 5.0


class Daemon:
    """Own the scheduler, the delivery task, the health server and the signals."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        *,
        build: AppBuilder,
        reload: Callable[[], Config],
        notifier: Notifier | None = None,
        ownership: Ownership | None = None,
        outage: Outage | None = None,
    ) -> None:
        """``store``: the open state, kept across reloads (its owner closes it).

        ``build`` makes the App from a config on ``store``, at the start and again after each
        reload or failed delivery loop; ``reload`` reads the config again on SIGHUP (raising
        ``ConfigError``); ``notifier``: systemd's socket (None: systemd is not listening);
        ``ownership``: which Services this replica polls and delivers (None: all of them);
        ``outage``: where a database outage is said (shared with the lease keeper).
        """
        self.config = config
        self._store = store
        self._build = build
        self._load = reload
        self.stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._inflight: set[asyncio.Task[object]] = set()
        self._fatal: BaseException | None = None
        self.health = HealthState.for_interval(config.poll.interval_seconds)
        self.notifier = notifier if notifier is not None else Notifier(None)
        self.clock_watch = ClockWatch()
        self._scheduler: AsyncIOScheduler | None = None
        self._ownership = ownership if ownership is not None else SoleOwner()
        self._app: App | None = None
        self._outage = outage if outage is not None else Outage(config.poll.interval_seconds)
        self._cycles = CycleJob(self._outage, interval_seconds=config.poll.interval_seconds)

    async def run(self) -> int:
        # Its "skipped: maximum number of running instances" warning becomes cycle_skipped.
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        # Its "Run time of job ... was missed" warning (a clock step, before the watch corrects
        # it) becomes job_missed.
        logging.getLogger("apscheduler.executors.default").setLevel(logging.ERROR)
        store = self._store
        status = StatusSource(
            store, lambda: self.config, self._cycles.cycles, replica=self._ownership.replica
        )
        server = await start_http(self.config, self.health, status)
        self._install_signals()
        watch = asyncio.create_task(self._watch(store))
        try:
            # One round of leases before the first schedule: what is owned is polled at once.
            services = watched_services(self.config)
            await self._ownership.start(services, self._ownership_changed, self._cycles.settle)
            self._copy_ownership()
            while True:
                app = await self._build(self.config, store)
                await self._serve(app)
                await self._close_parts(app)
                if self.stop.is_set() or self._fatal is not None:
                    break
                if not self._reload.is_set():
                    # The delivery loop failed (its error is logged): start the parts again,
                    # but not in a tight loop if the cause (a full disk, say) persists.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), RESTART_PAUSE_SECONDS)
                    if self.stop.is_set():
                        break
                self._reload.clear()
                await self._set_services()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            # After the drain: what was in flight is committed or acked, so the next owner
            # starts from there (released now rather than when the leases expire).
            await self._stop_ownership()
            self.notifier.notify("STOPPING=1")
            if server is not None:
                await server.stop()
        if self._fatal is not None:
            log.error("daemon_stopped", reason=str(self._fatal))
            return 1
        log.info("daemon_stopped", reason="signal")
        return 0

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def _on_stop(self, sig: signal.Signals) -> None:
        log.info("shutdown_requested", signal=sig.name)
        self.stop.set()

    def _on_reload(self) -> None:
        try:
            new = self._load()
        except ConfigError as exc:
            metrics.CONFIG_ERRORS.inc()
            log.error("reload_rejected", error=str(exc))
            return
        if new.state.path != self.config.state.path:
            metrics.CONFIG_ERRORS.inc()
            log.error("reload_rejected", error="state.path cannot change without a restart")
            return
        if _url(new) != _url(self.config):
            metrics.CONFIG_ERRORS.inc()
            log.error("reload_rejected", error="state.url cannot change without a restart")
            return
        if listener_key(new) != listener_key(self.config):
            log.warning("reload_ignored_key", key="http", reason="needs a restart")
        configure_logging(new.log.format, new.log.level)
        log.info("reload_accepted")
        self.config = new
        self._reload.set()

    async def _serve(self, app: App) -> None:
        """Run polls and deliveries until a stop or a reload is asked for."""
        try:
            await retire_removed_sinks(app, time.time())
            retired, revived = await sync_watch(app, time.time())
        except StateUnavailableError as exc:
            # The database is down: serve anyway (cycles wait for it); the next reload syncs.
            self._outage.report(exc, step="watch_sync")
        else:
            if retired or revived:
                log.info("watch_synced", unwatched=retired, revived=revived)
        self._app = app
        scheduler = self._schedule(app)
        delivery_stop = asyncio.Event()
        delivery = asyncio.create_task(app.dispatcher.run_forever(delivery_stop, app.wake))
        scheduler.start()
        self._scheduler = scheduler
        self.notifier.notify("READY=1")
        log.info("daemon_started", watches=len(app.cycles), sinks=len(app.sinks))
        stop_wait = asyncio.create_task(self.stop.wait())
        reload_wait = asyncio.create_task(self._reload.wait())
        await asyncio.wait({stop_wait, reload_wait, delivery}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop_wait, reload_wait):
            task.cancel()
        self.notifier.notify("STOPPING=1" if self.stop.is_set() else "RELOADING=1")
        scheduler.pause()
        await self._drain(delivery, delivery_stop)
        self._scheduler = None
        self._app = None
        scheduler.shutdown(wait=False)
        if delivery.done() and not delivery.cancelled() and delivery.exception() is not None:
            # Retrieved here, so asyncio never prints "Task exception was never retrieved".
            failure = delivery.exception()
            log.error("delivery_loop_failed", error=str(failure), error_type=type(failure).__name__)

    def _schedule(self, app: App) -> AsyncIOScheduler:
        """One cycle job per watched Service, plus the heartbeat and the pruning."""
        scheduler = AsyncIOScheduler()
        scheduler.add_listener(_on_skipped, EVENT_JOB_MAX_INSTANCES)
        scheduler.add_listener(_on_missed, EVENT_JOB_MISSED)
        interval = self.config.poll.interval_seconds
        for cycle in app.cycles:
            _every(
                scheduler,
                self._cycle_job,
                IntervalTrigger(seconds=interval, jitter=min(interval / 4, 30.0)),
                f"cycle:{cycle.watch.service_sid}",
                cycle,
                app,
                misfire_grace_time=max(1, int(interval)),
            )
        _every(
            scheduler,
            self._heartbeat_job,
            IntervalTrigger(seconds=HEARTBEAT_SECONDS),
            "heartbeat",
            app,
        )
        _every(scheduler, self._prune_job, IntervalTrigger(seconds=PRUNE_SECONDS), "prune", app)
        return scheduler

    async def _drain(self, delivery: asyncio.Task[None], delivery_stop: asyncio.Event) -> None:
        """Let in-flight work finish within the deadline, then cancel the rest."""
        delivery_stop.set()
        pending: set[asyncio.Task[object]] = {*self._inflight}
        if not delivery.done():
            pending.add(delivery)
        timeout = self.config.delivery.shutdown_timeout_seconds
        _, late = await asyncio.wait(pending, timeout=timeout) if pending else (set(), set())
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if late:
            log.warning("drain_deadline_passed", cancelled=len(late))

    async def _cycle_job(self, cycle: ServiceCycle, app: App) -> None:
        if self.stop.is_set():
            return
        sid = cycle.watch.service_sid
        if not self._ownership.owns(sid):
            log.debug("cycle_not_owned", service_sid=sid, replica=self._ownership.replica)
            return
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            timeout = max(self.config.poll.timeout_seconds, 1.0) * 2
            fatal = await self._cycles.run(cycle, self.health, seconds=timeout)
        finally:
            self._inflight.discard(task)
        if fatal is not None:
            self._fatal = fatal
            self.stop.set()

    def _ownership_changed(self, service_sid: str, owned: bool) -> None:
        """A Service gained is polled now and its events delivered; a loss stops its cycle."""
        if not owned:
            self._cycles.cancel(service_sid)  # and the next cycle and every send ask ``owns``
            self._cycles.cycles.forget(service_sid)  # its page and gauge are the new owner's
            return
        scheduler = self._scheduler
        job = None if scheduler is None else scheduler.get_job(f"cycle:{service_sid}")
        if job is not None:
            job.modify(next_run_time=_now_dt())
        if self._app is not None:
            self._app.wake.set()

    def _copy_ownership(self) -> None:
        owning = any(self._ownership.owns(sid) for sid in watched_services(self.config))
        self.health.set_ownership(reachable=self._ownership.reachable, owning=owning)

    async def _set_services(self) -> None:
        self._cycles.cycles.keep(watched_services(self.config))  # a reload may drop some
        try:
            await self._ownership.set_services(watched_services(self.config))
        except StateUnavailableError as exc:  # the lease keeper settles it when it answers
            self._outage.report(exc, step="set_services")

    async def _stop_ownership(self) -> None:
        try:
            await self._ownership.stop()
        except StateError as exc:  # the leases then expire on their own
            log.error("ownership_stop_failed", error=str(exc), error_type=type(exc).__name__)

    async def _heartbeat_job(self, app: App) -> None:
        # Run by the scheduler: proves that it runs jobs (the watch task keeps the ages).
        self.health.heartbeat()
        self.notifier.notify("WATCHDOG=1")

    async def _watch(self, store: StateStore) -> None:
        """Every ``WATCH_SECONDS`` of the monotonic clock: the clock, the state, the outbox."""
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), WATCH_SECONDS)
            if self.stop.is_set():
                return
            try:
                await self.watch_once(store)
            except Exception as exc:  # the watch's boundary: a bug here must not stop it
                log.error("watch_failed", error=str(exc), error_type=type(exc).__name__)

    async def watch_once(self, store: StateStore) -> None:
        """Correct a step of the wall clock; stop on a lost state; record the outbox's age."""
        self._copy_ownership()
        step = self.clock_watch.check()
        if step is not None:
            await self._clock_stepped(store, step)
        reason = await store.lost()
        if reason is not None:
            self._state_lost(store, reason)
            return
        try:
            self.health.set_outbox_oldest(await store.oldest_pending_enqueued_at())
        except StateUnavailableError as exc:
            self._outage.report(exc, step="outbox_age")
        except StateError as exc:
            log.error("outbox_age_unknown", error=str(exc))

    async def _clock_stepped(self, store: StateStore, step: float) -> None:
        """Make every job due now and move the stored due times by ``step``."""
        metrics.CLOCK_STEPS.inc()
        rescheduled = 0
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running:
            now = _now_dt()
            for job in scheduler.get_jobs():
                job.modify(next_run_time=now)
                rescheduled += 1
        try:
            shifted: int | None = await store.shift_due_times(step)
        except StateError as exc:
            shifted = None
            log.error("clock_step_not_stored", step_seconds=round(step, 3), error=str(exc))
        log.warning(
            "clock_stepped",
            step_seconds=round(step, 3),
            jobs_rescheduled=rescheduled,
            deliveries_shifted=shifted,
        )

    def _state_lost(self, store: StateStore, reason: str) -> None:
        if self._fatal is not None:
            return
        log.error("state_lost", path=store.location, reason=reason)
        metrics.STATE_LOST.inc()
        self.health.state_lost(reason)
        self._fatal = StateError(f"state file {store.location} is lost: {reason}")
        self.stop.set()

    async def _prune_job(self, app: App) -> None:
        try:
            await prune_state(app.store, self.config, time.time())
        except StateUnavailableError as exc:
            self._outage.report(exc, step="prune")

    async def _close_parts(self, app: App) -> None:
        """Close the client and the sinks; the store outlives reloads."""
        await app.client.aclose()
        for sink in app.sinks:
            await sink.aclose()


def _every(
    scheduler: AsyncIOScheduler,
    job: Callable[..., Awaitable[None]],
    trigger: IntervalTrigger,
    job_id: str,
    *args: object,
    misfire_grace_time: int = 1,
) -> None:
    """Add a job that runs now and then on ``trigger``, never twice at once, never stacked."""
    scheduler.add_job(
        job,
        trigger,
        args=list(args),
        id=job_id,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=misfire_grace_time,
        next_run_time=_now_dt(),
    )


def _on_skipped(event: JobSubmissionEvent) -> None:
    # A cycle still running when its next run came (a first baseline of thousands of
    # sessions takes several intervals): APScheduler's WARNING line, said once, structured.
    log.info("cycle_skipped", job=event.job_id, reason="previous cycle still running")


def _on_missed(event: JobEvent) -> None:
    # A run more than its grace time late: the wall clock stepped forward (the watch makes
    # every job due at once right after), or the event loop was blocked.
    log.info("job_missed", job=event.job_id, scheduled_at=str(event.scheduled_run_time))


def _now_dt() -> datetime:
    return datetime.now().astimezone()


def _url(config: Config) -> str | None:
    url = config.state.url
    return None if url is None else url.get_secret_value()
