"""Fault injection and rate limiting for the simulator's Twilio endpoints.

Faults are drawn from a seeded RNG, so a seed replays the same sequence of answers.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MALFORMED_KINDS: tuple[str, ...] = ("truncated", "html", "missing_meta")


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one request: an error status, a malformed body, and/or a delay."""

    status: int | None = None
    malformed: str | None = None
    delay: float = 0.0


NO_FAULT = Fault()


@dataclass(frozen=True, slots=True)
class FaultRates:
    error_5xx: float = 0.0
    rate_429: float = 0.0
    malformed: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 1.0
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    error_statuses: tuple[int, ...] = (500, 502, 503)


class Faults:
    """Queued one-off faults (``fail_next``) first, then random ones at the configured rates."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._queue: deque[Fault] = deque()
        self.rates = FaultRates()
        self._lock = threading.Lock()

    def fail_next(
        self, n: int, status: int = 500, *, malformed: str | None = None, delay: float = 0.0
    ) -> None:
        """Make the next ``n`` requests fail with ``status`` (or a ``malformed`` 200 body)."""
        if malformed is not None:
            _check_kind(malformed)
        fault = Fault(status=None if malformed else status, malformed=malformed, delay=delay)
        with self._lock:
            self._queue.extend([fault] * n)

    def set_rates(
        self,
        *,
        error_5xx: float = 0.0,
        rate_429: float = 0.0,
        malformed: float = 0.0,
        slow: float = 0.0,
        slow_seconds: float = 1.0,
        malformed_kinds: Sequence[str] = MALFORMED_KINDS,
        error_statuses: Sequence[int] = (500, 502, 503),
    ) -> FaultRates:
        for rate in (error_5xx, rate_429, malformed, slow):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate: expected a number from 0 to 1, got {rate}")
        if error_5xx + rate_429 + malformed > 1.0:
            raise ValueError("fault rates: error_5xx + rate_429 + malformed must not exceed 1")
        for kind in malformed_kinds:
            _check_kind(kind)
        rates = FaultRates(
            error_5xx,
            rate_429,
            malformed,
            slow,
            slow_seconds,
            tuple(malformed_kinds),
            tuple(error_statuses),
        )
        with self._lock:
            self.rates = rates
        return rates

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self.rates = FaultRates()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def draw(self) -> Fault:
        """The fault for the next request (``NO_FAULT`` most of the time)."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            rates, rng = self.rates, self._rng
            delay = rates.slow_seconds if rates.slow and rng.random() < rates.slow else 0.0
            roll = rng.random() if rates.error_5xx or rates.rate_429 or rates.malformed else 1.0
            if roll < rates.error_5xx:
                return Fault(status=rng.choice(rates.error_statuses), delay=delay)
            roll -= rates.error_5xx
            if roll < rates.rate_429:
                return Fault(status=429, delay=delay)
            roll -= rates.rate_429
            if roll < rates.malformed:
                return Fault(malformed=rng.choice(rates.malformed_kinds), delay=delay)
            return Fault(delay=delay) if delay else NO_FAULT


def _check_kind(kind: str) -> None:
    if kind not in MALFORMED_KINDS:
        raise ValueError(f"malformed kind: expected one of {MALFORMED_KINDS}, got {kind!r}")


class TokenBuckets:
    """One token bucket per key (a Service SID): ``rate`` tokens/s up to ``capacity``."""

    def __init__(self, rate: float | None, capacity: float, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self.rate = rate
        self.capacity = capacity

    def configure(self, rate: float | None, capacity: float) -> None:
        """Change the limits; every bucket starts full again."""
        if capacity < 1 or (rate is not None and rate <= 0):
            raise ValueError("rate limit: expected rate > 0 (or None) and capacity >= 1")
        with self._lock:
            self.rate, self.capacity = rate, capacity
            self._buckets.clear()

    def take(self, key: str) -> bool:
        """Spend one token of ``key``'s bucket; False when it is empty."""
        if self.rate is None:
            return True
        now = self._monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True
