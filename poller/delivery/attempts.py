"""Delivery attempts, measured: when each send began, how long it took, its short error class.

The dispatcher starts a :class:`Stopwatch` lap right before a send (one event, or one digest)
and stops it when the sink has answered or failed; the :class:`Lap` turns into the
``poller.state.history.Attempt`` of each delivery the send carried. The error class is a few
safe characters (``HTTP 503``, ``SMTP 535``, ``ReadTimeout``): never a URL, a body or a secret,
which the text of a delivery error may name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from poller.errors import DeliveryError
from poller.record import Record
from poller.state.history import Attempt, AttemptOutcome


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Lap(Record):
    """One measured send: its start (wall clock) and how long it took (monotonic clock)."""

    at: float
    latency_seconds: float

    def attempt(
        self,
        delivery_id: int,
        outcome: AttemptOutcome,
        *,
        status: int | None = None,
        error: str | None = None,
    ) -> Attempt:
        """Return the attempt this send was for ``delivery_id``."""
        return Attempt(delivery_id, self.at, self.latency_seconds, outcome, status, error)


class Stopwatch:
    """Measure sends: ``start()`` before, ``stop()`` of what it returned after."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic

    def start(self) -> Running:
        return Running(self._clock(), self._monotonic(), self._monotonic)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Running(Record):
    """A send under way."""

    at: float
    started: float
    monotonic: Callable[[], float]

    def stop(self) -> Lap:
        return Lap(self.at, max(0.0, self.monotonic() - self.started))


def error_class(exc: BaseException) -> str:
    """Return the short class of a failed send: ``HTTP 503``, ``SMTP 535``, ``ReadTimeout``."""
    cause = exc.__cause__
    if isinstance(exc, DeliveryError) and exc.status is not None:
        return f"{_protocol(cause)} {exc.status}"
    if isinstance(exc, DeliveryError) and cause is not None:
        return type(cause).__name__  # the transport's own error: ReadTimeout, ConnectError
    return type(exc).__name__


def _protocol(cause: BaseException | None) -> str:
    # The email sink raises from aiosmtplib's error; every other sink's status is HTTP's.
    # Compared by module so that delivery does not import the SMTP client.
    module = type(cause).__module__ if cause is not None else ""
    return "SMTP" if module.split(".")[0] == "aiosmtplib" else "HTTP"
