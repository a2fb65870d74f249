"""A whole state as plain rows, backend-neutral: what ``poller state migrate`` copies.

One backend dumps every row it keeps into a ``Snapshot`` (``poller.state.sqlite.dump``);
another loads it (``poller.state.postgres.load``). The rows say what the state means, not how
a backend lays it out: a delivery keeps its position in its queue (the deliveries come in
queue order; the target numbers them anew), its attempts and times, whether it is pending or
dead, and the Service whose owner delivers it. The events are every event kept (pending, dead
and done alike) in their original order, with their attempts (``attempts``, oldest first).
Each row's fields are named as the columns they fill. Each table is any iterable of rows, so a
backend may read them as the loader writes them instead of holding them all in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from poller.state.models import DisabledSink


@dataclass(frozen=True, slots=True)
class WatchRow:
    service_sid: str
    started_at: float


@dataclass(frozen=True, slots=True)
class SessionRow:
    """Every column of a stored session (see ``models.SessionState`` for their meaning)."""

    session_sid: str
    service_sid: str
    baselined: bool
    new_traffic: bool
    last_success_at: float | None
    consecutive_failures: int
    last_error: str | None
    last_failure_at: float | None
    activity_marker: str | None
    status: str | None
    unsettled_until: float | None
    added_at: float
    gone_at: float | None
    watch_listed: bool
    watch_last_interaction: str | None


@dataclass(frozen=True, slots=True)
class InteractionRow:
    """One known interaction's fingerprint."""

    session_sid: str
    sid: str
    date_updated: str | None
    inbound_status: str | None
    outbound_status: str | None


@dataclass(frozen=True, slots=True)
class SessionFingerprintRow:
    session_sid: str
    status: str | None
    closed_reason: str | None
    date_expiry: str | None
    date_ended: str | None
    checked_at: float


@dataclass(frozen=True, slots=True)
class EventRow:
    """A kept event; ``body`` is ``Event.to_json()``, kept verbatim.

    ``type``: the event's type (also in ``body``); ``created_at``: when it was first
    enqueued; ``done_at``: when its last delivery was acked (None while one is pending or
    dead); ``seq``: its place in the original order (the events come in ``seq`` order; the
    target may number them anew in that order).
    """

    id: str
    service_sid: str
    session_sid: str
    body: str
    type: str
    created_at: float
    done_at: float | None
    seq: int


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One kept delivery attempt of an event (see ``poller.state.history.AttemptRecord``)."""

    event_id: str
    sink: str
    session_sid: str
    at: float
    latency: float  # seconds
    outcome: str  # "delivered" | "retry" | "dead" | "disabled"
    status: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One (event, sink) outbox row; ``id`` only orders the rows (the target renumbers)."""

    id: int
    event_id: str
    sink: str
    service_sid: str  # the event's
    session_sid: str
    state: str  # "pending" | "dead"
    attempts: int
    enqueued_at: float
    next_attempt_at: float
    last_error: str | None
    last_status: int | None
    dead_at: float | None


@dataclass(frozen=True, slots=True)
class SlackThreadRow:
    sink: str
    session_sid: str
    ts: str


@dataclass(frozen=True, slots=True)
class SinkPaceRow:
    sink: str
    not_before: float
    set_at: float


@dataclass(frozen=True)
class Snapshot:
    """Every row of one state, each table in a stable order (deliveries in queue order).

    ``attempts`` come after ``events`` and ``deliveries`` (each names an event), oldest first.
    """

    source: str  # what it was read from (``sqlite PATH``), kept by the target
    schema_version: int  # the source backend's own numbering
    watches: Iterable[WatchRow] = ()
    sessions: Iterable[SessionRow] = ()
    interactions: Iterable[InteractionRow] = ()
    session_fingerprints: Iterable[SessionFingerprintRow] = ()
    events: Iterable[EventRow] = ()
    deliveries: Iterable[DeliveryRow] = ()
    slack_threads: Iterable[SlackThreadRow] = ()
    sink_pacing: Iterable[SinkPaceRow] = ()
    disabled_sinks: Iterable[DisabledSink] = ()
    attempts: Iterable[AttemptRow] = ()
