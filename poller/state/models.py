"""What a state backend hands out: frozen, backend-neutral snapshots.

Sessions and their stored fingerprints, deliveries and dead letters, disabled and failing
sinks, and the ``Summary`` of ``poller state show``. Nothing here knows how a backend keeps
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from poller.events import Event
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


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What the state holds of a session's own record: its fingerprint and when it was read."""

    fingerprint: SessionFingerprint
    checked_at: float


@dataclass(frozen=True)
class SessionCounts:
    """The stored sessions, counted: watched ones (baselined, failing among them) and gone."""

    watched: int
    baselined: int
    gone: int
    failing: int


@dataclass(frozen=True)
class OutboxSummary:
    """The outbox in numbers: rows per sink and state, the oldest pending age, disabled sinks."""

    pending: Mapping[str, int]
    dead: Mapping[str, int]
    oldest_pending_age_seconds: float | None
    disabled: tuple[DisabledSink, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "pending": dict(self.pending),
            "dead": dict(self.dead),
            "oldest_pending_age_seconds": self.oldest_pending_age_seconds,
            "disabled": {
                d.sink: {"since": d.since, "status": d.status, "reason": d.reason}
                for d in self.disabled
            },
        }


@dataclass(frozen=True)
class Lease:
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


@dataclass(frozen=True)
class Summary:
    """What ``poller state show`` prints, whatever the backend.

    ``backend`` names it (``sqlite``, ``memory``, ...), ``location`` is where it keeps the
    state (a path, a URL without its password) and ``schema_version`` is the backend's own
    numbering of its layout. ``leases``: one per Service, for a backend shared by several
    replicas (PostgreSQL); None for one whose owner is the one process that opened it, and
    then left out of the JSON (a SQLite state prints as it always did).
    """

    backend: str
    location: str
    schema_version: int
    sessions: SessionCounts
    interactions_tracked: int
    outbox: OutboxSummary
    watches: tuple[tuple[str, float], ...]  # (service_sid, started_at), by SID
    leases: tuple[Lease, ...] | None = None  # by SID

    def to_json(self) -> dict[str, object]:
        """Return the JSON-able mapping ``poller state show`` prints."""
        shown: dict[str, object] = {
            "backend": self.backend,
            "path": self.location,
            "schema_version": self.schema_version,
            "sessions": {
                "watched": self.sessions.watched,
                "baselined": self.sessions.baselined,
                "gone": self.sessions.gone,
                "failing": self.sessions.failing,
            },
            "interactions_tracked": self.interactions_tracked,
            "outbox": self.outbox.to_json(),
            "watches": [
                {"service_sid": sid, "started_at": started} for sid, started in self.watches
            ],
        }
        if self.leases is not None:
            shown["leases"] = [lease.to_json() for lease in self.leases]
        return shown
