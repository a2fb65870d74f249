"""When to retry a failed delivery, and when to give up on it (dead letter)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from poller.backoff import Backoff

if TYPE_CHECKING:
    from poller.config import DeliveryConfig

BACKOFF_FACTOR = 2.0


@dataclass(frozen=True)
class DeliveryPolicy:
    """When to retry a delivery and when to give up on it."""

    max_attempts: int = 20
    max_age_seconds: float = 3 * 86400.0
    initial_backoff_seconds: float = 5.0
    max_backoff_seconds: float = 6 * 3600.0
    concurrency: int = 4

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> DeliveryPolicy:
        return cls(
            max_attempts=config.max_attempts,
            max_age_seconds=config.max_age_seconds,
            initial_backoff_seconds=config.initial_backoff_seconds,
            max_backoff_seconds=config.max_backoff_seconds,
            concurrency=config.concurrency,
        )

    def next_delay(
        self, attempts: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Return the seconds to wait after ``attempts`` failed attempts.

        The first retry is immediate (most failures are blips); later ones back off
        exponentially from ``initial_backoff_seconds`` with jitter. ``Retry-After`` means "not
        before", so the longer of the hint and the schedule wins; ``max_backoff_seconds`` caps
        both, so a receiver cannot park an event for days.
        """
        scheduled = 0.0
        if attempts > 1:
            backoff = Backoff(
                base=self.initial_backoff_seconds,
                factor=BACKOFF_FACTOR,
                cap=max(self.max_backoff_seconds, self.initial_backoff_seconds),
                jitter="equal",
            )
            scheduled = backoff.delay(attempts - 2, rng)
        if retry_after is not None:
            scheduled = max(scheduled, retry_after)
        return min(scheduled, self.max_backoff_seconds)
