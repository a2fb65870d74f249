"""What the state shows an operator: records the read-side commands and pages build.

``poller state show``'s ``Summary``, ``poller events``'s kept events (``KeptEvent``,
``SinkOutcome``, selected by a ``HistoryQuery``) and the status page's ``AttemptRecord``.
Polling and delivering never build one, so they live apart from the records those use
(``poller.state.models``, ``poller.state.history``) and the backends import them where they
build them: Python 3.11's dataclass decorator compiles every method of every record at
import, about half a millisecond each, and ``poller once`` runs from cron every minute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from poller.events import Event
    from poller.state.history import AttemptOutcome
    from poller.state.models import DisabledSink, Lease

SinkState = Literal["delivered", "pending", "dead"]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """A kept attempt: what ``Attempt`` said, with the event and sink it was for."""

    event_id: str
    sink: str
    session_sid: str
    at: float
    latency_seconds: float
    outcome: AttemptOutcome
    status: int | None
    error: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "event_id": self.event_id,
            "sink": self.sink,
            "session_sid": self.session_sid,
            "at": self.at,
            "latency_seconds": self.latency_seconds,
            "outcome": self.outcome,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class SinkOutcome:
    """Where one kept event stands for one sink it went to.

    ``state``: ``pending`` or ``dead`` while the outbox holds it for the sink (pending again
    after a replay), else ``delivered``. ``attempts``: the kept attempts for the sink; the
    ``last_*`` fields are of the latest (None: never attempted yet).
    """

    sink: str
    state: SinkState
    attempts: int
    last_at: float | None
    last_status: int | None
    last_error: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "sink": self.sink,
            "state": self.state,
            "attempts": self.attempts,
            "last_at": self.last_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class KeptEvent:
    """One event the state keeps, where it stands for each sink, and when it was detected.

    ``detected_at``: when it was first enqueued; ``done_at``: when its last delivery was acked
    (None while any is pending or dead); ``seq``: its place in the original order.
    """

    seq: int
    event: Event
    detected_at: float
    done_at: float | None
    sinks: tuple[SinkOutcome, ...]  # by sink name


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A selection of kept events; every field narrows it, None (or empty) leaves it open.

    ``sink``: events that went to that sink (an attempt or an outbox row for it);
    ``since``: detected at or after this Unix time; ``event_ids``: exactly these.
    ``limit``: at most this many, the LATEST ones of the selection (None: all), always
    returned in the original order (``seq`` ascending).
    """

    session_sid: str | None = None
    sink: str | None = None
    type: str | None = None
    since: float | None = None
    event_ids: tuple[str, ...] = ()
    limit: int | None = None


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
