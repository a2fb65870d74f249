"""Observability: logging setup, health probes and the metrics endpoint.

The facade over ``logging_setup`` (structlog configuration and redaction) and ``health``
(``HealthState`` and the aiohttp ``HealthServer``); the metrics themselves live in ``metrics``.
"""

from __future__ import annotations

from poller.health import HealthServer, HealthState
from poller.logging_setup import LogFormat, configure_logging, redact, scrub_text

__all__ = [
    "HealthServer",
    "HealthState",
    "LogFormat",
    "configure_logging",
    "redact",
    "scrub_text",
]
