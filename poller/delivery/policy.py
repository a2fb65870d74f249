"""When to retry a failed delivery, and when to give up on it (dead letter).

The dispatcher asks :meth:`DeliveryPolicy.decide` once per failed attempt and applies the answer:
:class:`Retry` (store the next attempt's time) or :class:`DeadLetter` (move it to the dead
letters, with the reason logged). The limits are the config's ``delivery`` section, read from
the :class:`~poller.config.DeliveryConfig` itself, so each default is written once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from poller.backoff import Backoff
from poller.record import Record

if TYPE_CHECKING:
    from poller.config import DeliveryConfig

BACKOFF_FACTOR = 2.0


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Retry(Record):
    """Attempt the delivery again ``at`` (the outbox's wall clock), ``delay`` seconds from now."""

    at: float
    delay: float


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class DeadLetter(Record):
    """Give up: ``reason`` is ``permanent``, ``max_attempts`` or ``max_age``."""

    reason: str


class DeliveryPolicy:
    """The retry schedule and the limits of the config's ``delivery`` section."""

    def __init__(self, config: DeliveryConfig) -> None:
        self.config = config

    def decide(
        self,
        *,
        attempts: int,
        enqueued_at: float,
        now: float,
        permanent: bool,
        retry_after: float | None,
        rng: random.Random | None = None,
    ) -> Retry | DeadLetter:
        """What to do after ``attempts`` failed attempts (this one counted), at ``now``.

        A permanent failure, the ``max_attempts``-th attempt or a delivery older than
        ``max_age_seconds`` is dead-lettered; anything else is retried after
        :meth:`next_delay`.
        """
        if permanent:
            return DeadLetter("permanent")
        if attempts >= self.config.max_attempts:
            return DeadLetter("max_attempts")
        if now - enqueued_at >= self.config.max_age_seconds:
            return DeadLetter("max_age")
        delay = self.next_delay(attempts, retry_after, rng)
        return Retry(at=now + delay, delay=delay)

    def next_delay(
        self, attempts: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Return the seconds to wait after ``attempts`` failed attempts.

        The first retry is immediate (most failures are blips); later ones back off
        exponentially from ``initial_backoff_seconds`` with jitter. ``Retry-After`` means "not
        before", so the longer of the hint and the schedule wins; ``max_backoff_seconds`` caps
        both, so a receiver cannot park an event for days.
        """
        initial, cap = self.config.initial_backoff_seconds, self.config.max_backoff_seconds
        scheduled = 0.0
        if attempts > 1:
            backoff = Backoff(
                base=initial, factor=BACKOFF_FACTOR, cap=max(cap, initial), jitter="equal"
            )
            scheduled = backoff.delay(attempts - 2, rng)
        if retry_after is not None:
            scheduled = max(scheduled, retry_after)
        return min(scheduled, cap)

    def hold_seconds(
        self, attempts: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """How long to hold a delivery whose outcome the outbox could not record.

        Its next delay, but never the immediate retry: the row is still due in the outbox.
        """
        return max(self.next_delay(attempts, retry_after, rng), self.config.initial_backoff_seconds)
