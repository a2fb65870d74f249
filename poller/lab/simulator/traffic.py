"""Live traffic: new interactions on random sessions and status progressions, at a rate."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from typing import Literal

from poller.lab.simulator.core import Simulator
from poller.lab.simulator.store import SimulatorError, UnknownResourceError

_TICK_SECONDS = 0.01
_REFRESH_SECONDS = 0.5


class _Traffic:
    def __init__(
        self,
        simulator: Simulator,
        sessions: Sequence[str] | None,
        status_progression: bool,
        voice_ratio: float,
        rng: random.Random,
    ) -> None:
        self.simulator = simulator
        self.fixed = sessions is not None
        self.candidates = list(sessions) if sessions is not None else []
        self.status_progression = status_progression
        self.voice_ratio = voice_ratio
        self.rng = rng
        self.unsettled: list[str] = []
        self.closed: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Take in sessions created since (when following every session)."""
        if not self.fixed:
            sids = self.simulator.session_sids()
            self.candidates = [sid for sid in sids if sid not in self.closed]

    def act(self) -> bool:
        """Make one change; False when there is no session left to add to."""
        if self.status_progression and self.unsettled and self.rng.random() < 0.5:
            self._advance()
            return True
        return self._add()

    def _advance(self) -> None:
        index = self.rng.randrange(len(self.unsettled))
        sid = self.unsettled[index]
        self.unsettled[index] = self.unsettled[-1]
        self.unsettled.pop()
        with contextlib.suppress(UnknownResourceError):
            if self.simulator.advance(sid) is not None and self.simulator.unsettled([sid]):
                self.unsettled.append(sid)

    def _add(self) -> bool:
        while self.candidates:
            index = self.rng.randrange(len(self.candidates))
            session_sid = self.candidates[index]
            kind: Literal["message", "voice"] = (
                "voice" if self.rng.random() < self.voice_ratio else "message"
            )
            body = f"Simulated message {self.rng.randrange(10**6)}"
            try:
                service_sid = self.simulator.fetch_session_service(session_sid)
                record = self.simulator.add_interaction(service_sid, session_sid, kind, body)
            except (SimulatorError, UnknownResourceError):
                # Closed or deleted: leave it out from now on.
                self.closed.add(session_sid)
                self.candidates[index] = self.candidates[-1]
                self.candidates.pop()
                continue
            if self.status_progression:
                self.unsettled.append(record["sid"])
            return True
        return False


async def run_traffic(
    simulator: Simulator,
    rate_per_second: float,
    sessions: Sequence[str] | None = None,
    status_progression: bool = True,
    stop: asyncio.Event | None = None,
    *,
    voice_ratio: float = 0.2,
    max_changes: int | None = None,
    seed: int | None = None,
) -> int:
    """Add interactions to random ``sessions`` (default: all) and advance their statuses.

    Runs until ``stop`` is set, ``max_changes`` changes were made, or no open session is
    left; returns the number of changes made.
    """
    if rate_per_second <= 0:
        raise ValueError(f"rate_per_second: expected > 0, got {rate_per_second}")
    stop = stop or asyncio.Event()
    traffic = _Traffic(simulator, sessions, status_progression, voice_ratio, random.Random(seed))
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = 0
    refreshed = started
    while not stop.is_set():
        if loop.time() - refreshed > _REFRESH_SECONDS:
            traffic.refresh()
            refreshed = loop.time()
        due = int((loop.time() - started) * rate_per_second) + 1 - done
        # Catch up after a stall, but never more than one second of traffic at once.
        for _ in range(min(due, max(1, int(rate_per_second)))):
            if not traffic.act():
                return done
            done += 1
            if max_changes is not None and done >= max_changes:
                return done
        delay = max(_TICK_SECONDS, started + (done + 1) / rate_per_second - loop.time())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
    return done
