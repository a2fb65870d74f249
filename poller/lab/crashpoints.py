"""Named points where a test can kill the process (``POLLER_CRASH_AT=<point>``).

Crash-safety tests SIGKILL the real poller between fetch, commit, delivery and acknowledgement;
this places the kill exactly: ``after_fetch`` and ``after_commit`` (a poll), ``after_send`` and
``after_ack`` (a delivery). ``cli`` reads ``POLLER_CRASH_AT`` once and hands the poll and the
dispatcher a :class:`CrashPoints`; unset (always, in production) it is :data:`NO_CRASH`, and
each point costs one comparison.
"""

from __future__ import annotations

import os
import signal


class CrashPoints:
    """SIGKILL this process when it reaches the one point named (None: never)."""

    def __init__(self, at: str | None = None) -> None:
        self.at = at or None

    def reached(self, point: str) -> None:
        """SIGKILL this process if ``point`` is the one named."""
        if point == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


NO_CRASH = CrashPoints()
