"""Exponential backoff with jitter, and ``Retry-After`` parsing.

Shared by the Twilio client and the delivery dispatcher.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal

Jitter = Literal["full", "equal", "none"]

# A server asking for more than a day is broken or hostile; waiting longer helps nobody.
MAX_RETRY_AFTER_SECONDS = 86_400.0

_DELTA_SECONDS = re.compile(r"-?\d+(?:\.\d+)?")
_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class Backoff:
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


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the seconds a ``Retry-After`` header asks to wait, or None when it is unusable.

    ``value`` is delta-seconds or an HTTP date; ``now`` is the Unix time the date is measured
    from (best: the response's ``Date``). Past dates and negative numbers give 0; anything above
    a day is capped at a day.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        seconds_or_none = _seconds_until_http_date(text, now)
        if seconds_or_none is None:
            return None
        seconds = seconds_or_none
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def parse_http_date(value: str | None) -> float | None:
    """Return the Unix time of an HTTP date (RFC 9110 IMF-fixdate and its obsolete forms)."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        # "-0000" parses naive; HTTP dates are always GMT.
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _seconds_until_http_date(value: str, now: float) -> float | None:
    moment = parse_http_date(value)
    return None if moment is None else moment - now
