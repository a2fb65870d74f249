"""Saying that the state's database does not answer: once per interval, not once per call.

While PostgreSQL is down or restarting every cycle of every Service fails the same way; one
``state_unavailable`` line per interval (with how many failures it stands for) says so, and
``state_available`` says when the database answers again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from poller.errors import StateUnavailableError

log = structlog.get_logger(__name__)


class Outage:
    """Report :class:`StateUnavailableError` at most once per ``interval`` (monotonic)."""

    def __init__(self, interval: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._monotonic = monotonic
        self._said_at: float | None = None  # when the last line was logged; None: no outage
        self._unsaid = 0  # failures since that line

    @property
    def ongoing(self) -> bool:
        return self._said_at is not None

    def report(self, exc: StateUnavailableError | str, **fields: object) -> None:
        """One more call failed on the database; log it unless a line said so lately.

        ``exc``: the error, or its one line (no password). The daemon and the lease keeper
        share one Outage, so an outage is one line per interval whoever meets it.
        """
        now = self._monotonic()
        if self._said_at is not None and now - self._said_at < self.interval:
            self._unsaid += 1
            return
        log.error("state_unavailable", error=str(exc), failures=self._unsaid + 1, **fields)
        self._said_at = now
        self._unsaid = 0

    def over(self, **fields: object) -> None:
        """A call on the database succeeded: an outage, if one was said, is over."""
        if self._said_at is None:
            return
        log.info("state_available", failures=self._unsaid, **fields)
        self._said_at = None
        self._unsaid = 0
