"""Whether this process records metrics: one that serves none (``poller once``) does not.

``poller once`` has no ``/metrics`` to serve and pushes nowhere, so what it would record is
never read; leaving prometheus_client unimported saves it about 9 ms of CPU, 6% of its start
(bench/bench_startup.py). :func:`stop_recording` must run before anything imports
:mod:`poller.observe.metrics`; afterwards it changes nothing (the metrics are real, and
recording into them is harmless).
"""

from __future__ import annotations

import sys

_recording = True


def stop_recording() -> None:
    """Make the metrics of this process, when first imported, drop every record."""
    global _recording
    if "poller.observe.metrics" not in sys.modules:
        _recording = False


def recording() -> bool:
    """True unless :func:`stop_recording` ran before the metrics were imported."""
    return _recording
