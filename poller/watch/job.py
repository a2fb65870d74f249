"""The cycle job: one cycle of one Service under its timeout, its outcome told to the health.

A cycle's failure stays in that cycle: it becomes one log line and a failed poll in the health
(refused credentials are returned, for the daemon to stop). Two failures of the shared state
are told apart: a write fenced because this replica lost the Service's lease (``cycle_fenced``:
another replica owns it now, nothing is wrong here) and a database that does not answer
(``state_unavailable``, once per interval however many cycles fail).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog

from poller.errors import CredentialsError, FencedError, StateUnavailableError
from poller.observe.cycles import CycleLog
from poller.observe.health import HealthState
from poller.observe.outage import Outage
from poller.watch.cycle import CycleResult, WatchLike

log = structlog.get_logger(__name__)


class CycleLike(Protocol):
    @property
    def watch(self) -> WatchLike: ...

    async def run(self) -> CycleResult: ...


class CycleJob:
    """Run cycles and settle their outcome into the health and the log."""

    def __init__(
        self,
        outage: Outage,
        cycles: CycleLog | None = None,
        *,
        interval_seconds: float | None = None,
    ) -> None:
        """``cycles``: where each cycle's end is noted (new: one told ``interval_seconds``)."""
        self._outage = outage
        self.cycles = cycles if cycles is not None else CycleLog(interval_seconds)
        self._running: dict[str, asyncio.Future[CycleResult]] = {}  # by Service

    def cancel(self, service_sid: str) -> None:
        """Stop the Service's cycle now (its lease is lost): a cancelled poll commits nothing."""
        running = self._running.get(service_sid)
        if running is not None:
            running.cancel()

    async def settle(self, service_sid: str) -> None:
        """Return once the Service's cycle (if one runs) has ended."""
        running = self._running.get(service_sid)
        if running is not None:
            await asyncio.wait({running})

    async def run(
        self, cycle: CycleLike, health: HealthState, *, seconds: float
    ) -> CredentialsError | None:
        """Run ``cycle`` within ``seconds``; return refused credentials, else None."""
        sid = cycle.watch.service_sid
        started = time.monotonic()
        running = asyncio.ensure_future(asyncio.wait_for(cycle.run(), timeout=seconds))
        self._running[sid] = running
        try:
            result = await running
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are stopped ourselves (the drain's deadline)
            log.info("cycle_cancelled", service_sid=sid, reason="lease lost")
            return None
        except CredentialsError as exc:
            self._failed(sid, "credentials rejected")
            log.error("credentials_rejected", error=str(exc))
            return exc
        except TimeoutError:
            health.poll_failed()
            self._failed(sid, "timed out")
            log.warning("cycle_timed_out", service_sid=sid)
            return None
        except FencedError as exc:
            # Not a failure of this replica: the Service is another's now (the lease keeper
            # hears of it too), and what this cycle would have written was not.
            log.warning("cycle_fenced", service_sid=sid, error=str(exc))
            return None
        except StateUnavailableError as exc:
            health.poll_failed()
            self._failed(sid, "the state does not answer")
            self._outage.report(exc, service_sid=sid)
            return None
        except Exception as exc:  # one cycle's boundary: the state file failed, or a bug
            health.poll_failed()
            self._failed(sid, type(exc).__name__)
            log.error(
                "cycle_failed", service_sid=sid, error=str(exc), error_type=type(exc).__name__
            )
            return None
        finally:
            if self._running.get(sid) is running:
                del self._running[sid]
        self._outage.over()
        self._ended(result, health, seconds=time.monotonic() - started)
        return None

    def _ended(self, result: CycleResult, health: HealthState, *, seconds: float) -> None:
        """Settle a cycle that ran to its end into the cycle log, the health and the log."""
        self.cycles.record(
            result.service_sid,
            polled=result.planned,
            failed=result.failed,
            events=result.events,
            succeeded=result.succeeded,
            error="the Sessions list failed" if result.listing_failed else None,
        )
        if result.succeeded:
            health.poll_succeeded()
        else:
            health.poll_failed()
        log.debug(
            "cycle_done",
            service_sid=result.service_sid,
            planned=result.planned,
            failed=result.failed,
            events=result.events,
            seconds=round(seconds, 3),
        )

    def _failed(self, service_sid: str, error: str) -> None:
        self.cycles.record(service_sid, polled=0, failed=0, succeeded=False, error=error)
