"""The last cycle of each Service, as the status page and the metrics tell it.

``CycleJob`` records every cycle's end here: when (wall clock), how many sessions it polled and
how many of those failed, and whether it succeeded. The gauge
``poller_service_last_success_timestamp_seconds{service_sid}`` follows the successes, for the
alert on a Service without a successful cycle; Service SIDs come from the config (or from the
leases this replica holds), a bounded set.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from poller.observe.metrics import LAST_SERVICE_SUCCESS, POLL_INTERVAL


@dataclass(frozen=True, slots=True)
class CycleRecord:
    """How one Service's latest cycle ended; ``last_success_at`` is of the latest success."""

    service_sid: str
    at: float
    polled: int
    failed: int
    events: int
    succeeded: bool
    error: str | None  # a short reason when the whole cycle failed (timed out, state down)
    last_success_at: float | None
    cycles: int  # cycles ended since the start

    def to_json(self) -> dict[str, object]:
        return {
            "service_sid": self.service_sid,
            "at": self.at,
            "polled": self.polled,
            "failed": self.failed,
            "events": self.events,
            "succeeded": self.succeeded,
            "error": self.error,
            "last_success_at": self.last_success_at,
            "cycles": self.cycles,
        }


class CycleLog:
    """The latest cycle of every Service this process ran, by Service SID."""

    def __init__(
        self, interval_seconds: float | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        """``interval_seconds``: the poll interval, told to the metrics when given."""
        self._clock = clock
        if interval_seconds is not None:
            POLL_INTERVAL.set(interval_seconds)
        self._latest: dict[str, CycleRecord] = {}

    def record(
        self,
        service_sid: str,
        *,
        polled: int,
        failed: int,
        events: int = 0,
        succeeded: bool,
        error: str | None = None,
    ) -> CycleRecord:
        """Note that a cycle of ``service_sid`` ended now, and how."""
        now = self._clock()
        before = self._latest.get(service_sid)
        last_success = now if succeeded else (before.last_success_at if before else None)
        record = CycleRecord(
            service_sid=service_sid,
            at=now,
            polled=polled,
            failed=failed,
            events=events,
            succeeded=succeeded,
            error=error,
            last_success_at=last_success,
            cycles=1 + (before.cycles if before else 0),
        )
        self._latest[service_sid] = record
        if succeeded:
            LAST_SERVICE_SUCCESS.labels(service_sid=service_sid).set(now)
        return record

    def forget(self, service_sid: str) -> None:
        """Forget one Service (another replica owns it now), its gauge with it."""
        self.keep(sid for sid in self._latest if sid != service_sid)

    def keep(self, service_sids: Iterable[str]) -> None:
        """Forget every Service but these (left the config, or owned by another replica now).

        Its gauge goes too: the alert on a Service without a successful cycle then reads the
        replica that polls it, not the one that stopped.
        """
        kept = set(service_sids)
        for sid in [sid for sid in self._latest if sid not in kept]:
            del self._latest[sid]
            with contextlib.suppress(KeyError):  # never succeeded here: no gauge to remove
                LAST_SERVICE_SUCCESS.remove(sid)

    def latest(self) -> dict[str, CycleRecord]:
        """Return the latest cycle of each Service, by SID."""
        return dict(sorted(self._latest.items()))
