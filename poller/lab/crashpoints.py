"""Named points where a test can kill the process (``POLLER_CRASH_AT=<point>``).

Crash-safety tests SIGKILL the real poller between fetch, commit, delivery and acknowledgement;
this places the kill exactly. Unset (always, in production) each call is one dict lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset({"after_fetch", "after_commit", "after_send", "after_ack"})


def reached(point: str) -> None:
    """SIGKILL this process if ``POLLER_CRASH_AT`` names ``point``."""
    if os.environ.get("POLLER_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
