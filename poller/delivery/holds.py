"""Deliveries held back in memory because the outbox could not record what happened to them.

When the state file cannot be written (a full disk), a failed attempt's retry time, a dead
letter or an ack is lost: the row stays due in the outbox, and without this it would be sent
again at once, every pass. A hold keeps the row out of the dispatcher's hands until its
backoff, counted in memory, has passed. Holds are measured on the monotonic clock and live
as long as the process; the outbox row itself is never changed, so nothing is lost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from poller.record import Record

if TYPE_CHECKING:
    from poller.delivery.policy import DeliveryPolicy
    from poller.state.models import Delivery

log = structlog.get_logger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Hold(Record):
    """One delivery held back: its failed attempts and until when."""

    attempts: int  # failed attempts in all, those the outbox could not record included
    until: float  # monotonic time before which the delivery is not attempted


class Holds:
    """Delivery ids held back, with the attempts counted for them."""

    def __init__(self, monotonic: Clock = time.monotonic) -> None:
        self._monotonic = monotonic
        self._holds: dict[int, Hold] = {}

    def __len__(self) -> int:
        return len(self._holds)

    def hold(self, delivery_id: int, attempts: int, seconds: float) -> None:
        """Keep ``delivery_id`` back for ``seconds``, after ``attempts`` failed attempts."""
        self._holds[delivery_id] = Hold(attempts, self._monotonic() + seconds)

    def back_off(
        self,
        delivery: Delivery,
        policy: DeliveryPolicy,
        retry_after: float | None,
        rng: random.Random,
    ) -> None:
        """Hold ``delivery`` as long as the policy says (:meth:`DeliveryPolicy.hold_seconds`)."""
        attempts = self.attempts(delivery.id, delivery.attempts) + 1
        seconds = policy.hold_seconds(attempts, retry_after, rng)
        self.hold(delivery.id, attempts, seconds)
        log.warning(
            "delivery_held",
            sink=delivery.sink,
            event_id=delivery.event.id,
            attempts=attempts,
            next_attempt_in=round(seconds, 3),
            reason="the outbox could not record the attempt",
        )

    def attempts(self, delivery_id: int, stored: int) -> int:
        """The failed attempts of a delivery: the outbox's count or, if higher, ours."""
        held = self._holds.get(delivery_id)
        return stored if held is None else max(stored, held.attempts)

    def held(self, delivery_id: int) -> bool:
        """Whether ``delivery_id`` must not be attempted yet."""
        held = self._holds.get(delivery_id)
        return held is not None and held.until > self._monotonic()

    def release(self, delivery_ids: Iterable[int]) -> None:
        """Forget the holds of deliveries the outbox now records again."""
        for delivery_id in delivery_ids:
            self._holds.pop(delivery_id, None)
