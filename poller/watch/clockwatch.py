"""Noticing a step of the wall clock: NTP stepping it, a VM resumed, a container migrated.

Durations are measured on the monotonic clock, which never steps; the wall clock is for what
is stored and shown. Between two checks both clocks should advance by the same amount: a
difference larger than ``threshold`` is a step of that many seconds (positive: forward), which
the caller corrects for (jobs rescheduled, stored due times shifted). A suspended machine stops
the monotonic clock but not the wall clock, so a resume looks like a forward step: what was
waiting then waits only what was left of its wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

# Slewing (NTP's gradual correction) moves the wall clock by at most 0.5 ms per second; a
# second between checks a few seconds apart is a step, never slewing or a busy event loop.
STEP_THRESHOLD_SECONDS = 1.0


class ClockWatch:
    """Compare how far the wall and the monotonic clock moved since the last check."""

    def __init__(
        self,
        *,
        wall: Clock = time.time,
        monotonic: Clock = time.monotonic,
        threshold: float = STEP_THRESHOLD_SECONDS,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._threshold = threshold
        self._offset = wall() - monotonic()

    def check(self) -> float | None:
        """Return the step (seconds, negative: backwards) since the last check, or None."""
        offset = self._wall() - self._monotonic()
        step, self._offset = offset - self._offset, offset
        return step if abs(step) > self._threshold else None
