"""The delivery dispatcher: due outbox rows -> sink -> ack, retry later or dead letter.

Every sink is drained on its own task, so a slow or failing sink never holds back another.
Within a sink, the store hands out only the head of each session's queue; heads of different
sessions are sent concurrently (bounded by ``concurrency``), and a session's next event becomes
due only once its head is acked, so each session is delivered strictly in order.

The heads of one batch are acked together, in one transaction, when the batch ends (also when
a stop or a deadline ends it early); the next batch is read only after that. A crash between a
send and its batch's ack sends that event again, with the same ``webhook-id``: delivery is at
least once either way, and one transaction per event cost more than the sending.

    success                   -> ack (with the rest of its batch)
    RetryableDeliveryError    -> retry later (backoff, Retry-After), dead letter past the limits
    PermanentDeliveryError    -> dead letter at once
    (the policy decides, ``poller.delivery.policy``; ``poller.delivery.failures`` applies it)
    SinkDisabledError         -> stop using the sink; its deliveries stay pending, the answer
                                 is noted for ``poller outbox list`` (``poller.delivery.disabled``)
    any other exception       -> treated as retryable (a bug in a sink must not lose events)

Replicas on a shared state deliver only the Services they own: ``owns(service_sid)`` is
asked right before each send (and each digest); a delivery of another's Service is neither
sent nor settled, it stays pending for its owner. An ack, retry or dead letter the outbox
refuses because the lease was lost meanwhile (``FencedError``) leaves the rows as they are for
the new owner, and they are dropped from memory (``poller.delivery.fenced``).

When the outbox itself cannot be written (``StateError``: a full disk), the deliveries whose
outcome it could not record are held back in memory with their backoff
(``poller.delivery.holds``) and the pass fails; ``run_forever`` logs ``delivery_loop_failed``
once per failed pass and pauses, growing the pause while the failures go on.

Every send is measured (``poller.delivery.attempts``). With ``delivery.history_seconds`` > 0
its attempts go to the outbox with the ack, retry or dead letter they led to (a disabling
answer's to ``record_attempts``), for the history; with 0 none is passed.

The outbox it drains and the results it reports are in ``poller.delivery.results``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from poller.backoff import Backoff
from poller.delivery.attempts import Lap, Stopwatch
from poller.delivery.disabled import DisabledSinks
from poller.delivery.failures import Failures
from poller.delivery.fenced import drop_fenced
from poller.delivery.holds import Holds
from poller.delivery.policy import DeliveryPolicy
from poller.delivery.results import OutboxStore, RunResult, SinkResult, Tally
from poller.errors import FencedError, StateError
from poller.lab.crashpoints import NO_CRASH, CrashPoints
from poller.observe.metrics import DEAD_LETTERS, DELIVERIES, OUTBOX_OLDEST_AGE, OUTBOX_PENDING
from poller.record import Record
from poller.sinks import Sink

if TYPE_CHECKING:
    from poller.state.models import Delivery

log = structlog.get_logger(__name__)

# One digest summarises at most this many events; a larger backlog takes several.
DIGEST_MAX_EVENTS = 1000
BATCH_SIZE = 100
# Without a wake-up, look for deliveries whose retry timer ran out this often.
IDLE_POLL_SECONDS = 1.0
# While a long backlog drains, refresh the outbox gauges this often (each refresh counts the
# outbox); every pass refreshes them when it ends.
GAUGE_REFRESH_SECONDS = 1.0
# After a pass that failed on the outbox: 1 s, 2 s, 4 s ... at most a minute, then on.
FAILED_PASS_PAUSE = Backoff(base=1.0, factor=2.0, cap=60.0, jitter="none")


@dataclass(frozen=True, repr=False, eq=False)
class _Run(Record):
    """The bounds of one pass: timers ignored or not, a deadline, a stop signal."""

    ignore_timers: bool
    deadline: float | None
    stop: asyncio.Event | None


class Dispatcher:
    """Deliver the outbox to the sinks.

    ``clock`` is the wall clock the outbox times are in; ``monotonic`` measures deadlines.
    """

    def __init__(
        self,
        store: OutboxStore,
        sinks: Sequence[Sink],
        policy: DeliveryPolicy,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        batch_size: int = BATCH_SIZE,
        idle_poll_seconds: float = IDLE_POLL_SECONDS,
        crash: CrashPoints = NO_CRASH,
        owns: Callable[[str], bool] = lambda _service_sid: True,
    ) -> None:
        """``owns``: whether this replica may deliver a Service's events now (cheap, local)."""
        self._store = store
        self._owns = owns
        self._sinks = list(sinks)
        self._policy = policy
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._batch_size = batch_size
        self._idle_poll_seconds = idle_poll_seconds
        self._disabled = DisabledSinks(store)
        self._holds = Holds(monotonic)
        self._stopwatch = Stopwatch(clock, monotonic)
        # history_seconds 0: no attempt is passed to the outbox, which then keeps nothing.
        self._keep = policy.config.history_seconds > 0
        self._failures = Failures(
            store,
            policy,
            self._disabled,
            self._holds,
            clock=clock,
            monotonic=monotonic,
            rng=self._rng,
            keep_history=self._keep,
        )
        self._crash = crash

    @property
    def disabled_sinks(self) -> frozenset[str]:
        """Names of the sinks an answer disabled (410, a deleted webhook, SMTP 535); events wait."""
        return self._disabled.names

    async def run_once(
        self, *, ignore_timers: bool = False, deadline: float | None = None
    ) -> RunResult:
        """Deliver what is due until nothing is, or ``deadline`` (``monotonic`` time) passes.

        With ``ignore_timers`` every pending delivery is due and attempted once; with a
        ``deadline`` too (``poller once``), a failed one whose retry is due before the deadline
        (the immediate first retry, a ``Retry-After``, the backoff) is waited for and tried
        again in the same pass; the rest stays pending.
        """
        return await self._run(_Run(ignore_timers, deadline, None))

    async def run_forever(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Deliver continuously: on ``wake`` (new events) and when retry timers run out.

        Returns once ``stop`` is set and the sends in flight have finished.
        """
        await self._refresh_dead_letters(self._sinks)
        failures = 0
        while not stop.is_set():
            wake.clear()
            pause = self._idle_poll_seconds
            try:
                await self._run(_Run(ignore_timers=False, deadline=None, stop=stop))
                failures = 0
            except StateError as exc:
                pause = FAILED_PASS_PAUSE.ceiling(failures)
                failures += 1
                log.error(
                    "delivery_loop_failed",
                    error=str(exc),
                    error_type=type(exc).__name__,
                    failures=failures,
                    held=len(self._holds),
                    next_pass_in=pause,
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await _wait_any((stop,) if failures else (stop, wake))

    async def _run(self, run: _Run) -> RunResult:
        tallies = {sink.name: Tally() for sink in self._sinks}
        await self._disabled.sync(tallies)
        active = [sink for sink in self._sinks if sink.name not in self._disabled]
        try:
            await _gather_all(self._drain(sink, tallies[sink.name], run) for sink in active)
        except BaseException:
            # The gauges still say what is pending (reading works on a full disk).
            with contextlib.suppress(StateError):
                await self._update_gauges(self._sinks)
            raise
        pending = await self._update_gauges(self._sinks)
        return RunResult(
            {
                name: SinkResult(
                    delivered=tally.delivered,
                    failed=tally.failed,
                    dead=tally.dead,
                    pending_left=pending.get(name, 0),
                    disabled=name in self._disabled,
                    not_owned=len(tally.not_owned),
                )
                for name, tally in tallies.items()
            }
        )

    def _stopping(self, run: _Run) -> bool:
        if run.stop is not None and run.stop.is_set():
            return True
        return run.deadline is not None and self._monotonic() >= run.deadline

    async def _drain(self, sink: Sink, tally: Tally, run: _Run) -> None:
        attempted: set[int] = set()
        refresh_gauges_at = self._monotonic() + GAUGE_REFRESH_SECONDS
        while sink.name not in self._disabled and not self._stopping(run):
            threshold = sink.digest_threshold
            left = len(tally.not_owned)
            backlog = await self._backlog(sink.name, run, attempted, threshold)
            due = backlog or await self._due(sink.name, run, attempted, tally)
            if not due:
                if len(tally.not_owned) > left:
                    continue  # only other replicas' rows so far: look past them
                if await self._wait_for_retry(sink.name, tally, attempted, run):
                    continue
                return
            attempted.update(d.id for d in due)
            dead_before = tally.dead
            if backlog:
                await self._deliver_digest(sink, due, tally)
            else:
                await self._deliver_batch(sink, due, tally, run)
            if self._monotonic() >= refresh_gauges_at:
                await self._update_gauges([sink])
                refresh_gauges_at = self._monotonic() + GAUGE_REFRESH_SECONDS
            if tally.dead != dead_before:
                await self._refresh_dead_letters([sink])

    async def _wait_for_retry(
        self, sink: str, tally: Tally, attempted: set[int], run: _Run
    ) -> bool:
        """Once mode: sleep until the next retry due before the deadline; False if none is.

        The deliveries whose retry is then due are attempted again.
        """
        if not run.ignore_timers or run.deadline is None:
            return False
        deadline = run.deadline
        soonest = min((t for t in tally.retry_at.values() if t < deadline), default=None)
        if soonest is None:
            return False
        wait = max(0.0, soonest - self._monotonic())
        if wait > 0:
            log.info("delivery_retry_wait", sink=sink, wait_seconds=round(wait, 3))
        await self._sleep(wait)
        now = self._monotonic()
        for delivery_id, ready in list(tally.retry_at.items()):
            if ready <= now:
                attempted.discard(delivery_id)
                del tally.retry_at[delivery_id]
        return True

    async def _backlog(
        self, sink: str, run: _Run, attempted: set[int], threshold: int | None
    ) -> list[Delivery]:
        """For a digesting sink: its whole due backlog when that passes the threshold.

        Counted over every pending row, not only queue heads, so one session's burst of
        events is one digest too.
        """
        if threshold is None:
            return []
        now = None if run.ignore_timers else self._clock()
        rows = await self._store.backlog(sink, now, DIGEST_MAX_EVENTS + len(attempted))
        # A held row, or one already tried in this pass (its retry still to come), holds its
        # whole queue back: the rows behind it must not overtake it.
        waiting = {d.event.session_sid for d in rows if self._holds.held(d.id) or d.id in attempted}
        rows = [
            d
            for d in rows
            if d.event.session_sid not in waiting and self._owns(d.event.service_sid)
        ]
        rows = rows[:DIGEST_MAX_EVENTS]
        return rows if len(rows) > threshold else []

    async def _due(self, sink: str, run: _Run, attempted: set[int], tally: Tally) -> list[Delivery]:
        """Queue heads to send now; heads of Services not owned are left (``tally.not_owned``)."""
        left = tally.not_owned
        if not run.ignore_timers:
            if not self._holds and not left:
                rows = await self._store.due(sink, self._clock(), self._batch_size)
            else:
                limit = self._batch_size + len(self._holds) + len(left)
                rows = await self._store.due(sink, self._clock(), limit)
                rows = [d for d in rows if not self._holds.held(d.id) and d.id not in left]
        else:
            # Timers ignored: failed heads stay due, so look past the ones already tried.
            limit = self._batch_size + len(attempted) + len(left)
            rows = await self._store.due(sink, None, limit)
            rows = [d for d in rows if d.id not in attempted and d.id not in left]
        return self._owned(rows, tally)[: self._batch_size]

    def _owned(self, rows: Sequence[Delivery], tally: Tally) -> list[Delivery]:
        """The rows of Services this replica owns now; the others go to ``tally.not_owned``."""
        mine: list[Delivery] = []
        for delivery in rows:
            if self._owns(delivery.event.service_sid):
                mine.append(delivery)
            else:
                tally.not_owned.add(delivery.id)
        return mine

    async def _deliver_batch(
        self, sink: Sink, due: Sequence[Delivery], tally: Tally, run: _Run
    ) -> None:
        """Send queue heads, ``concurrency`` at a time; ack the ones that went through at once.

        ``due`` holds at most one head per session, so no event of the batch waits for another.
        The ack comes in ``finally``: a stop, a deadline, a failing store or a cancellation
        still acks what was sent.
        """
        sent: list[tuple[Delivery, Lap]] = []
        queue = iter(due)  # shared by the workers: each delivery is taken once

        async def worker() -> None:
            for delivery in queue:
                if sink.name in self._disabled or self._stopping(run):
                    return
                await self._send_one(sink, delivery, tally, sent)

        try:
            workers = min(self._policy.config.concurrency, len(due))
            await _gather_all(worker() for _ in range(workers))
        finally:
            await self._ack(sink, sent, tally)
        for delivery, _ in sent:
            if delivery.id in tally.not_owned:
                continue  # fenced: not acked here
            log.debug(
                "delivery_succeeded",
                sink=sink.name,
                event_id=delivery.event.id,
                attempts=delivery.attempts + 1,
            )

    async def _send_one(
        self, sink: Sink, delivery: Delivery, tally: Tally, sent: list[tuple[Delivery, Lap]]
    ) -> None:
        if not self._owned([delivery], tally):
            # The lease went while the batch was under way: the new owner sends it.
            log.debug("delivery_not_owned", sink=sink.name, event_id=delivery.event.id)
            return
        lap = self._stopwatch.start()
        try:
            await sink.send(delivery.event)
        except Exception as exc:  # one delivery's boundary: classify all
            await self._failures.settle(sink.name, [delivery], exc, tally, lap.stop())
            return
        self._crash.reached("after_send")
        sent.append((delivery, lap.stop()))

    async def _deliver_digest(self, sink: Sink, due: Sequence[Delivery], tally: Tally) -> None:
        due = self._owned(due, tally)  # whole queues: a Service's sessions go with it
        if not due:
            return
        lap = self._stopwatch.start()
        try:
            await sink.send_digest([d.event for d in due])
        except Exception as exc:  # one delivery's boundary: classify all
            await self._failures.settle(sink.name, due, exc, tally, lap.stop())
            return
        self._crash.reached("after_send")
        done = lap.stop()
        await self._ack(sink, [(d, done) for d in due], tally)
        log.debug("digest_delivered", sink=sink.name, events=len(due))

    async def _ack(self, sink: Sink, sent: Sequence[tuple[Delivery, Lap]], tally: Tally) -> None:
        """Take what was ``sent`` out of the outbox in one transaction (with its attempts)."""
        if not sent:
            return
        delivered = [d for d, _ in sent]
        ids = [d.id for d in delivered]
        history = [lap.attempt(d.id, "delivered") for d, lap in sent] if self._keep else None
        try:
            await (self._store.ack(ids, history=history) if history else self._store.ack(ids))
        except FencedError as exc:
            rest = drop_fenced(self._holds, sink.name, delivered, exc.service_sids, "ack")
            kept = {d.id for d in rest}
            tally.not_owned.update(i for i in ids if i not in kept)
            await self._ack(sink, [s for s in sent if s[0].id in kept], tally)  # still owned
            return
        except StateError:
            # Sent, but still due in the outbox: not again at once (at least once, not storms).
            for delivery in delivered:
                self._holds.back_off(delivery, self._policy, None, self._rng)
            raise
        self._holds.release(ids)
        self._crash.reached("after_ack")
        tally.delivered += len(delivered)
        DELIVERIES.labels(sink=sink.name, outcome="success").inc(len(delivered))
        await self._disabled.answered(sink.name)

    async def _update_gauges(self, sinks: Iterable[Sink]) -> dict[str, int]:
        """Set the outbox gauges; return the pending count of every sink (one query)."""
        pending = await self._store.counts_by_sink("pending")
        for sink in sinks:
            OUTBOX_PENDING.labels(sink=sink.name).set(pending.get(sink.name, 0))
        oldest = await self._store.oldest_pending_enqueued_at()
        OUTBOX_OLDEST_AGE.set(0.0 if oldest is None else max(0.0, self._clock() - oldest))
        return pending

    async def _refresh_dead_letters(self, sinks: Iterable[Sink]) -> None:
        dead = await self._store.counts_by_sink("dead")
        for sink in sinks:
            DEAD_LETTERS.labels(sink=sink.name).set(dead.get(sink.name, 0))


async def _gather_all(jobs: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` concurrently; once all have ended, re-raise the first failure.

    Only the store can fail here (sinks' errors are settled per delivery); waiting for every
    job first means nothing is left running behind the caller's back.
    """
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _wait_any(events: Sequence[asyncio.Event]) -> None:
    """Return when any of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
