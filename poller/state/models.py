"""What a state backend hands out: frozen, backend-neutral snapshots.

Sessions and their stored fingerprints, deliveries and dead letters, disabled and failing
sinks, leases. Nothing here knows how a backend keeps them. What only an operator's commands
read (the ``Summary`` of ``poller state show``, kept events) is in ``poller.state.views``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from poller.events import Event
from poller.record import Record
from poller.twilio.records import SessionFingerprint

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


@dataclass(frozen=True, repr=False, eq=False)
class Delivery(Record):
    """One (event, sink) row of the outbox."""

    id: int
    sink: str
    event: Event
    attempts: int
    enqueued_at: float
    next_attempt_at: float
    last_error: str | None
    last_status: int | None


@dataclass(frozen=True, repr=False, eq=False)
class DeadLetter(Delivery):
    """A delivery given up on; kept until requeued or purged."""

    dead_at: float

    @classmethod
    def of(cls, delivery: Delivery, dead_at: float) -> DeadLetter:
        """The dead letter of ``delivery``, given up on at ``dead_at``."""
        return cls(**{f.name: getattr(delivery, f.name) for f in fields(Delivery)}, dead_at=dead_at)


def short_error(error: str) -> str:
    """Return ``error`` on one line, cut to a length that fits a status display."""
    line = " ".join(error.split())
    if len(line) <= ERROR_MAX_CHARS:
        return line
    return line[: ERROR_MAX_CHARS - 3] + "..."


@dataclass(frozen=True, repr=False, eq=False)
class DisabledSink(Record):
    """A sink the dispatcher stopped using, and the answer that made it stop."""

    sink: str
    since: float  # the first disabling answer (kept across restarts that meet it again)
    last_at: float  # the latest one
    status: int | None  # HTTP status or SMTP code, when the answer had one
    reason: str  # one line


@dataclass(frozen=True, repr=False, eq=False)
class FailingSink(Record):
    """A sink with pending deliveries that failed at least once and wait for their retry."""

    sink: str
    deliveries: int  # pending rows with at least one failed attempt
    attempts: int  # the most attempts of any of them
    next_attempt_at: float  # the soonest retry
    last_status: int | None  # of the delivery with the most attempts
    last_error: str | None


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class StoredSession(Record):
    """What the state holds of a session's own record: its fingerprint and when it was read."""

    fingerprint: SessionFingerprint
    checked_at: float


@dataclass(frozen=True, repr=False, eq=False)
class Lease(Record):
    """Who owns a Service (several replicas): ``expires_in`` seconds by the database's clock.

    ``owner`` None (released, or never taken) or ``expires_in`` <= 0 (expired): any replica
    may take it. ``expires_in`` None: a watched Service no replica has taken yet.
    """

    service_sid: str
    owner: str | None
    epoch: int
    expires_in: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "service_sid": self.service_sid,
            "owner": self.owner,
            "epoch": self.epoch,
            "expires_in": self.expires_in,
        }
