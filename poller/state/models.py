"""What the store hands out: frozen snapshots of sessions and deliveries."""

from __future__ import annotations

from dataclasses import dataclass

from poller.events import Event

ERROR_MAX_CHARS = 300


@dataclass(frozen=True)
class SessionState:
    """One watched session as the store knows it."""

    service_sid: str
    session_sid: str
    baselined: bool
    new_traffic: bool
    last_success_at: float | None
    consecutive_failures: int
    last_error: str | None
    activity_marker: str | None
    status: str | None
    unsettled_until: float | None
    last_failure_at: float | None = None
    # When the session was closed, deleted or unwatched; None while it is watched.
    gone_at: float | None = None
    # Shown by the Sessions list that began its Service's watch, with this date_last_interaction
    # (None: no interaction listed). Until the baseline, interactions created at or before it
    # are the baseline and later ones are events.
    watch_listed: bool = False
    watch_last_interaction: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One (event, sink) row of the outbox."""

    id: int
    sink: str
    event: Event
    attempts: int
    enqueued_at: float
    next_attempt_at: float
    last_error: str | None
    last_status: int | None


@dataclass(frozen=True)
class DeadLetter(Delivery):
    """A delivery given up on; kept until requeued or purged."""

    dead_at: float


def short_error(error: str) -> str:
    """Return ``error`` on one line, cut to a length that fits a status display."""
    line = " ".join(error.split())
    if len(line) <= ERROR_MAX_CHARS:
        return line
    return line[: ERROR_MAX_CHARS - 3] + "..."


@dataclass(frozen=True)
class DisabledSink:
    """A sink the dispatcher stopped using, and the answer that made it stop."""

    sink: str
    since: float  # the first disabling answer (kept across restarts that meet it again)
    last_at: float  # the latest one
    status: int | None  # HTTP status or SMTP code, when the answer had one
    reason: str  # one line


@dataclass(frozen=True)
class FailingSink:
    """A sink with pending deliveries that failed at least once and wait for their retry."""

    sink: str
    deliveries: int  # pending rows with at least one failed attempt
    attempts: int  # the most attempts of any of them
    next_attempt_at: float  # the soonest retry
    last_status: int | None  # of the delivery with the most attempts
    last_error: str | None
