"""Exponential backoff with jitter.

Shared by the Twilio client and the delivery dispatcher (``Retry-After``: poller.http.status).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from poller.record import Record

Jitter = Literal["full", "equal", "none"]

_RNG = random.Random()


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Backoff(Record):
    """Exponential backoff: ``min(cap, base * factor**attempt)``, jittered.

    ``full`` jitter draws from ``[0, ceiling]``; ``equal`` from ``[ceiling/2, ceiling]``;
    ``none`` returns the ceiling itself.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.base) and self.base > 0):
            raise ValueError(f"Backoff.base: expected a positive number, got {self.base!r}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"Backoff.factor: expected a number >= 1, got {self.factor!r}")
        if not (math.isfinite(self.cap) and self.cap >= self.base):
            raise ValueError(f"Backoff.cap: expected a number >= base, got {self.cap!r}")
        if self.jitter not in ("full", "equal", "none"):
            raise ValueError(
                f"Backoff.jitter: expected 'full', 'equal' or 'none', got {self.jitter!r}"
            )

    def ceiling(self, attempt: int) -> float:
        """Return the largest delay of retry number ``attempt`` (0 is the first retry)."""
        if attempt < 0:
            raise ValueError(f"attempt: expected an integer >= 0, got {attempt}")
        try:
            raw = self.base * self.factor**attempt
        except OverflowError:
            return self.cap
        return min(self.cap, raw)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the seconds to wait before retry number ``attempt`` (0 is the first retry)."""
        ceiling = self.ceiling(attempt)
        if self.jitter == "none":
            return ceiling
        draw = (rng if rng is not None else _RNG).random()
        if self.jitter == "equal":
            return ceiling / 2 + draw * ceiling / 2
        return draw * ceiling
