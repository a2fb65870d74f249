"""``Simulator``: the Proxy's data (``ProxyState``) plus the knobs of its HTTP API.

Credentials, the per-Service rate limit, fault injection, answer order and request counters.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from poller.lab.simulator.faults import MALFORMED_KINDS, Fault, FaultRates, Faults, TokenBuckets
from poller.lab.simulator.model import ProxyState


class Simulator(ProxyState):
    """A Twilio Proxy account and the knobs of its API (see ``ProxyState`` for the data)."""

    def __init__(
        self,
        *,
        seed: int | str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        account_sid: str | None = None,
        auth_token: str | None = None,
        credentials: Sequence[tuple[str, str]] = (),
        rate_limit: float | None = 30.0,
        burst: float = 150.0,
        retry_after: float | None = None,
        shuffle: bool = False,
        strict_session_dates: bool = False,
    ) -> None:
        super().__init__(
            seed=seed,
            clock=clock,
            account_sid=account_sid,
            shuffle=shuffle,
            strict_session_dates=strict_session_dates,
        )
        self.auth_token = auth_token or self.new_sid("")
        self.credentials: list[tuple[str, str]] = [
            (self.account_sid, self.auth_token),
            *credentials,
        ]
        self.retry_after = retry_after
        self.faults = Faults(self.rng)
        self.limiter = TokenBuckets(rate_limit, burst, monotonic)
        self.requests: Counter[tuple[str, int]] = Counter()

    def fail_next(
        self, n: int, status: int = 500, *, malformed: str | None = None, delay: float = 0.0
    ) -> None:
        """Make the next ``n`` API requests fail with ``status``, or with a malformed body."""
        self.faults.fail_next(n, status, malformed=malformed, delay=delay)

    def fault_rates(
        self,
        error_5xx: float = 0.0,
        rate_429: float = 0.0,
        malformed: float = 0.0,
        slow: float = 0.0,
        slow_seconds: float = 1.0,
        malformed_kinds: Sequence[str] = MALFORMED_KINDS,
    ) -> FaultRates:
        """Fail that fraction of API requests at random (seeded); all zero turns it off."""
        return self.faults.set_rates(
            error_5xx=error_5xx,
            rate_429=rate_429,
            malformed=malformed,
            slow=slow,
            slow_seconds=slow_seconds,
            malformed_kinds=malformed_kinds,
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_rate_limit(self, rate: float | None, burst: float = 150.0) -> None:
        """Per-Service token bucket: ``rate`` requests/s, bursts to ``burst``; None: no limit."""
        self.limiter.configure(rate, burst)

    def draw_fault(self) -> Fault:
        return self.faults.draw()

    def count_request(self, kind: str, status: int) -> None:
        with self._lock:
            self.requests[(kind, status)] += 1

    def stats(self) -> dict[str, Any]:
        """JSON-able counters: requests by path kind and status, and the model's size."""
        with self._lock:
            by_kind: dict[str, dict[str, int]] = {}
            for (kind, status), count in sorted(self.requests.items()):
                by_kind.setdefault(kind, {})[str(status)] = count
            return {
                "requests": by_kind,
                "total_requests": sum(self.requests.values()),
                **self.sizes(),
            }
