"""A whole state as plain rows, backend-neutral: what ``poller state migrate`` copies.

One backend dumps every row it keeps into a ``Snapshot`` (``poller.state.sqlite.dump``);
another loads it (``poller.state.postgres.load``). The rows say what the state means, not how
a backend lays it out: a delivery keeps its position in its queue (the deliveries come in
queue order; the target numbers them anew), its attempts and times, whether it is pending or
dead, and the Service whose owner delivers it. Each table is any iterable of rows, so a
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
    """An event still needed by a delivery; ``body`` is ``Event.to_json()``, kept verbatim."""

    id: str
    service_sid: str
    session_sid: str
    body: str


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
    """Every row of one state, each table in a stable order (deliveries in queue order)."""

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
