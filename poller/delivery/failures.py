"""A failed attempt, settled: the sink disabled, or the policy's decision applied to the outbox.

The dispatcher hands every failed send (one delivery, or every delivery of a digest) to
:meth:`Failures.settle`. A :class:`~poller.errors.SinkDisabledError` turns the sink off
(``poller.delivery.disabled``); any other failure is classified once (:class:`Failure`) and
:meth:`DeliveryPolicy.decide` says, per delivery, ``Retry`` or ``DeadLetter``; this module only
writes that to the outbox, counts and logs it. An outbox that cannot record it holds the
delivery in memory (``poller.delivery.holds``) and the ``StateError`` goes up.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from poller.delivery.attempts import Lap, error_class
from poller.delivery.disabled import DisabledSinks
from poller.delivery.fenced import drop_fenced
from poller.delivery.holds import Holds
from poller.delivery.policy import DeadLetter, DeliveryPolicy, Retry
from poller.delivery.results import OutboxStore, Tally
from poller.errors import (
    DeliveryError,
    FencedError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
    StateError,
)
from poller.observe.metrics import DELIVERIES
from poller.record import Record

if TYPE_CHECKING:
    from poller.state.history import Attempt, AttemptOutcome
    from poller.state.models import Delivery

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Failure(Record):
    """What one failed send said: the text stored and logged, the status, the hints."""

    error: str
    status: int | None
    retry_after: float | None
    permanent: bool
    error_class: str  # what the history keeps: "HTTP 503", "ReadTimeout"

    @classmethod
    def of(cls, sink: str, exc: Exception) -> Failure:
        if not isinstance(exc, DeliveryError):
            # A sink bug: keep the event, and never log the exception's text (it may hold
            # whatever the sink was handling).
            log.error("sink_raised", sink=sink, error_type=type(exc).__name__)
            name = type(exc).__name__
            return cls(f"sink raised {name}", None, None, permanent=False, error_class=name)
        retry_after = exc.retry_after if isinstance(exc, RetryableDeliveryError) else None
        permanent = isinstance(exc, PermanentDeliveryError)
        return cls(str(exc), exc.status, retry_after, permanent, error_class(exc))


class Failures:
    """Settle failed attempts against the outbox, by the policy."""

    def __init__(
        self,
        store: OutboxStore,
        policy: DeliveryPolicy,
        disabled: DisabledSinks,
        holds: Holds,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random,
        keep_history: bool = False,
    ) -> None:
        """``keep_history``: pass each attempt to the outbox (``delivery.history_seconds``)."""
        self._keep = keep_history
        self._store = store
        self._policy = policy
        self._disabled = disabled
        self._holds = holds
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng

    async def settle(
        self,
        sink: str,
        deliveries: Sequence[Delivery],
        exc: Exception,
        tally: Tally,
        lap: Lap | None = None,
    ) -> None:
        """Settle every one of ``deliveries`` (all of a digest) after ``exc`` (sent in ``lap``)."""
        if isinstance(exc, SinkDisabledError):
            await self._disabled.disable(sink, exc, len(deliveries), self._clock())
            await self._record_disabled(deliveries, exc, lap)
            return
        failure = Failure.of(sink, exc)
        unstored: StateError | None = None
        lost: dict[str, _Fenced] = {}  # Service -> the first write its lost lease refused
        for delivery in deliveries:  # every one of a digest is held, even if the first failed
            if delivery.event.service_sid in lost:
                continue  # dropped below, with the one that found the lease lost
            try:
                await self._settle_one(sink, delivery, failure, tally, lap)
            except _Fenced as refused:
                lost[delivery.event.service_sid] = refused
            except StateError as error:
                unstored = unstored or error
        for service_sid, first in lost.items():
            gone = [d for d in deliveries if d.event.service_sid == service_sid]
            drop_fenced(self._holds, sink, gone, [service_sid], first.action)
            tally.not_owned.update(d.id for d in gone)
        if unstored is not None:
            raise unstored
        # Last: a state that cannot clear the note must not keep the failures from settling.
        await self._disabled.answered(sink)

    async def _record_disabled(
        self, deliveries: Sequence[Delivery], exc: SinkDisabledError, lap: Lap | None
    ) -> None:
        """Keep the disabling answer in the history; a state that cannot is no reason to fail."""
        if not self._keep or lap is None:
            return
        attempts = [
            lap.attempt(d.id, "disabled", status=exc.status, error=error_class(exc))
            for d in deliveries
        ]
        try:
            await self._store.record_attempts(attempts)
        except StateError as error:  # the rows stay pending: only the history misses a line
            log.warning("attempts_not_kept", attempts=len(attempts), error=str(error))

    def _attempt(
        self, delivery: Delivery, failure: Failure, outcome: AttemptOutcome, lap: Lap | None
    ) -> dict[str, Attempt]:
        """The ``attempt=`` of a retry or dead letter; nothing when no history is kept."""
        if not self._keep or lap is None:
            return {}
        error = failure.error_class
        return {"attempt": lap.attempt(delivery.id, outcome, status=failure.status, error=error)}

    async def _settle_one(
        self, sink: str, delivery: Delivery, failure: Failure, tally: Tally, lap: Lap | None
    ) -> None:
        now = self._clock()
        attempts = self._holds.attempts(delivery.id, delivery.attempts) + 1
        decision = self._policy.decide(
            attempts=attempts,
            enqueued_at=delivery.enqueued_at,
            now=now,
            permanent=failure.permanent,
            retry_after=failure.retry_after,
            rng=self._rng,
        )
        bound = log.bind(sink=sink, event_id=delivery.event.id)
        if isinstance(decision, DeadLetter):
            kept = self._attempt(delivery, failure, "dead", lap)
            await self._write(delivery, failure, self._store.dead_letter, now=now, **kept)
            tally.dead += 1
            DELIVERIES.labels(sink=sink, outcome="dead").inc()
            bound.error(
                "delivery_dead_lettered",
                status=failure.status,
                attempts=attempts,
                reason=decision.reason,
                error=failure.error,
            )
            return
        await self._retry(
            delivery, failure, decision, tally, self._attempt(delivery, failure, "retry", lap)
        )
        DELIVERIES.labels(sink=sink, outcome="retry").inc()
        bound.warning(
            "delivery_failed",
            status=failure.status,
            attempts=attempts,
            next_attempt_in=round(decision.delay, 3),
            error=failure.error,
        )

    async def _retry(
        self,
        delivery: Delivery,
        failure: Failure,
        retry: Retry,
        tally: Tally,
        kept: dict[str, Attempt],
    ) -> None:
        write = self._store.retry_later
        await self._write(delivery, failure, write, next_attempt_at=retry.at, **kept)
        tally.failed += 1
        tally.retry_at[delivery.id] = self._monotonic() + retry.delay

    async def _write(
        self,
        delivery: Delivery,
        failure: Failure,
        write: Callable[..., Awaitable[None]],
        **fields: Any,
    ) -> None:
        """Record a failed attempt with ``write``; if the outbox cannot, hold it in memory.

        A lease lost meanwhile (``FencedError``: nothing written) is no reason to hold it:
        the delivery is the new owner's now (``_Fenced``, for :meth:`settle` to drop).
        """
        try:
            await write(delivery.id, error=failure.error, status=failure.status, **fields)
        except FencedError as exc:
            raise _Fenced(getattr(write, "__name__", "settle")) from exc
        except StateError:
            self._holds.back_off(delivery, self._policy, failure.retry_after, self._rng)
            raise
        self._holds.release([delivery.id])


class _Fenced(Exception):
    """A write the outbox refused because this replica lost the lease (``action``: which)."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action
