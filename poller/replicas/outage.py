"""Saying that the state database cannot be reached: once per interval while it lasts."""

from __future__ import annotations

from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class Outage:
    """Log ``state_unavailable`` at most once per ``interval_seconds``, ``state_available``
    when the database answers again."""

    def __init__(
        self, replica: str, location: str, interval_seconds: float, monotonic: Callable[[], float]
    ) -> None:
        self.replica = replica
        self.location = location
        self.interval_seconds = interval_seconds
        self._monotonic = monotonic
        self._since: float | None = None  # start of the outage
        self._said: float | None = None  # when it was last logged

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, error: str) -> None:
        """A round could not reach the database (``error``: one line, no password)."""
        now = self._monotonic()
        if self._since is None:
            self._since = now
        if self._said is not None and now - self._said < self.interval_seconds:
            return
        self._said = now
        log.warning(
            "state_unavailable",
            replica=self.replica,
            location=self.location,
            error=error,
            for_seconds=round(now - self._since, 1),
        )

    def answered(self) -> None:
        """A round reached the database."""
        if self._since is None:
            return
        log.info(
            "state_available",
            replica=self.replica,
            location=self.location,
            after_seconds=round(self._monotonic() - self._since, 1),
        )
        self._since = self._said = None
