"""Helpers of the lease tests: waiting on a condition, and an event loop one can freeze."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    condition: Callable[[], object], within: float = 15.0, what: str = "condition"
) -> float:
    """Wait until ``condition()`` is truthy (checked every 10 ms); return the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


class FrozenLoop:
    """An event loop in a thread of its own that the test can freeze, as SIGSTOP would.

    While frozen nothing on it runs: no renewal is sent, no timer fires; the thread's
    monotonic clock goes on.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._thaw = threading.Event()
        self._frozen = threading.Event()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result from the caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def freeze(self) -> None:
        """Stop the loop between two of its steps (returns once it is stopped)."""
        self._thaw.clear()
        self._frozen.clear()
        self.loop.call_soon_threadsafe(self._hold)
        self._frozen.wait(10)

    def thaw(self) -> None:
        self._thaw.set()

    def _hold(self) -> None:
        self._frozen.set()
        self._thaw.wait()

    def close(self) -> None:
        self.thaw()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
