"""Async token buckets, one per Twilio Proxy Service.

Twilio limits requests per Service, so every request (first pages and next pages alike) takes a
token of its Service's bucket. After a 429 with ``Retry-After`` the whole Service pauses, not
just the request that was refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Float refills land a hair below a whole token (0.1 * 10 == 0.9999...); without this slack an
# acquirer would sleep for 1e-17 s on a clock that cannot advance that little, for ever.
_EPSILON = 1e-9


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    Acquirers are served strictly in arrival order: the waiting acquirer holds a FIFO lock, so a
    late arrival can never take a token an earlier one is waiting for.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate: expected a positive number of tokens per second, got {rate}")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst: expected a number >= 1, got {burst}")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._updated = clock()
        self._paused_until = -math.inf
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def paused_until(self) -> float:
        """The clock time before which no token is handed out (-inf when never paused)."""
        return self._paused_until

    def pause_until(self, when: float) -> None:
        """Hand out no token before clock time ``when``; an earlier pause never shortens one."""
        self._paused_until = max(self._paused_until, when)

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._refill(now)
                if self._tokens >= 1 - _EPSILON:
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep((1 - self._tokens) / self._rate)

    def _refill(self, now: float) -> None:
        if self._updated < self._paused_until:
            # Refill up to the pause's end but keep at most one token: a full burst right after
            # a 429 invites another.
            earned = self._tokens + (self._paused_until - self._updated) * self._rate
            self._tokens = min(earned, 1.0)
            self._updated = self._paused_until
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = max(self._updated, now)


class RateLimiters:
    """One :class:`TokenBucket` per Service sid, created on first use, all with the same rate."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}
        # Build one now so a bad rate fails at construction, not at the first request.
        TokenBucket(self._rate, self._burst, clock, sleep)

    def bucket(self, service_sid: str) -> TokenBucket:
        """Return the bucket of a Service, creating it on first use."""
        bucket = self._buckets.get(service_sid)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, self._clock, self._sleep)
            self._buckets[service_sid] = bucket
        return bucket

    async def acquire(self, service_sid: str) -> None:
        """Wait for a token of the Service's bucket and take it."""
        await self.bucket(service_sid).acquire()

    def pause_until(self, service_sid: str, when: float) -> None:
        """Make every acquirer of the Service wait until clock time ``when``."""
        self.bucket(service_sid).pause_until(when)
