"""The one fake clock of the tests: a wall clock, a monotonic clock and a sleep, injected.

Production code takes its time as callables (``clock=``, ``wall=``, ``sleep=``); a test hands it
the bound methods of one :class:`FakeClock`, so everything it builds sees the same time::

    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, burst=3.0, clock=clock.monotonic, sleep=clock.sleep)

Time moves only when the test says so: ``advance`` moves both clocks, ``step`` moves the wall
clock alone (NTP stepping it), and ``sleep`` either jumps both clocks forward by what it was asked
(``auto=True``, the default: a paced sender runs at once) or waits until ``advance`` passes its
deadline (``auto=False``: the test decides when each sleeper wakes).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

WALL = 1_800_000_000.0  # 2027-01-15: a plausible Unix time, far from 0
MONOTONIC = 1_000.0  # a monotonic clock has an arbitrary origin; never 0


class FakeClock:
    """A wall clock and a monotonic clock that move together (until ``step``), and a sleep."""

    def __init__(
        self, *, wall: float = WALL, monotonic: float = MONOTONIC, auto: bool = True
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self.auto = auto
        self.slept: list[float] = []  # every sleep asked for, in order
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        """The wall clock, Unix seconds (stands in for ``time.time``)."""
        return self._wall

    def monotonic(self) -> float:
        """The monotonic clock (stands in for ``time.monotonic``)."""
        return self._monotonic

    def another_process(self, origin: float) -> Callable[[], float]:
        """Another process's monotonic clock: it reads ``origin`` now and moves with this one."""
        offset = origin - self._monotonic
        return lambda: self._monotonic + offset

    def advance(self, seconds: float, *, wake: bool = True) -> None:
        """Let ``seconds`` pass on both clocks and wake the sleepers now due.

        ``wake=False``: time passes before the loop got to the sleepers (a later ``advance``,
        even of 0, wakes them).
        """
        self._wall += seconds
        self._monotonic += seconds
        if wake:
            self._wake_due()

    def step(self, seconds: float) -> None:
        """Step the wall clock alone (NTP, an operator); the monotonic clock does not see it."""
        self._wall += seconds

    @property
    def sleeping(self) -> int:
        """How many ``auto=False`` sleepers wait for ``advance``."""
        return sum(not future.done() for _, _, future in self._sleepers)

    async def sleep(self, seconds: float) -> None:
        """Sleep in fake time: at once (``auto``), or until ``advance`` passes the deadline."""
        self.slept.append(seconds)
        if self.auto:
            self.advance(max(seconds, 0.0))
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._monotonic + seconds, next(self._order), future))
        await future

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._monotonic:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
