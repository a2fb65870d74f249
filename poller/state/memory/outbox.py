"""The in-memory outbox: one row per (event, sink), each (sink, session) queue in id order.

The rows live in a dict in id order (ids only grow, as SQLite's AUTOINCREMENT gives them), so a
queue's head is its first pending row met in a scan: what the SQLite backend keeps in
``queue_heads`` is computed here on every read, which is cheap at a unit test's size. The
events and attempts the history keeps live here too (``history.py`` reads them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from poller.errors import StateError
from poller.events import Event
from poller.state.base import Outbox, RowState
from poller.state.history import Attempt
from poller.state.models import DeadLetter, Delivery, DisabledSink, FailingSink, short_error
from poller.state.views import AttemptRecord

_GONE_SINK = "the sink is no longer configured"


@dataclass
class Row:
    """One delivery as the memory backend holds it (mutable; handed out as a snapshot)."""

    id: int
    event_id: str
    sink: str
    session_sid: str
    enqueued_at: float
    next_attempt_at: float
    state: str = "pending"  # or "dead"
    attempts: int = 0
    last_error: str | None = None
    last_status: int | None = None
    dead_at: float | None = None


@dataclass
class Kept:
    """What the state knows of a stored event besides its body (see ``History``)."""

    seq: int
    detected_at: float
    done_at: float | None = None


@dataclass
class OutboxTables:
    """Everything the outbox holds: the events by id, the rows by id, the kept attempts."""

    events: dict[str, str] = field(default_factory=dict)  # id -> the event's JSON
    kept: dict[str, Kept] = field(default_factory=dict)  # id -> its order and times
    rows: dict[int, Row] = field(default_factory=dict)
    pairs: set[tuple[str, str]] = field(default_factory=set)  # (event id, sink) of every row
    disabled: dict[str, DisabledSink] = field(default_factory=dict)
    attempts: list[AttemptRecord] = field(default_factory=list)  # oldest first
    last_id: int = 0
    last_seq: int = 0


class MemoryOutbox(Outbox):
    """The outbox half of :class:`poller.state.memory.store.MemoryStore`."""

    def __init__(self) -> None:
        self._outbox: OutboxTables | None = OutboxTables()

    @property
    def _box(self) -> OutboxTables:
        if self._outbox is None:
            raise StateError("memory state: the store is closed")
        return self._outbox

    async def due(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        """Return up to ``limit`` due queue heads of ``sink``, in enqueue order."""
        heads = [row for row in self._heads(sink) if _ready(row, now)]
        return [self._delivery(row) for row in heads[: max(limit, 0)]]

    async def backlog(self, sink: str, now: float | None, limit: int) -> list[Delivery]:
        """Return up to ``limit`` pending rows of ``sink`` whose queue's head is due, by id."""
        ready = {row.session_sid for row in self._heads(sink) if _ready(row, now)}
        rows = [row for row in self._pending(sink) if row.session_sid in ready]
        return [self._delivery(row) for row in rows[: max(limit, 0)]]

    async def ack(
        self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
    ) -> None:
        """Delete delivered rows; keep ``history`` and the events (done), unless it is None."""
        chosen = set(delivery_ids)
        rows = [row for row in self._box.rows.values() if row.id in chosen]
        if history is None:
            self._delete(rows)
            return
        self._keep([a for a in history if a.delivery_id in chosen])
        done_at = max((a.at for a in history), default=time.time())
        self._delete(rows, done_at=done_at)

    async def retry_later(
        self,
        delivery_id: int,
        *,
        next_attempt_at: float,
        error: str,
        status: int | None,
        attempt: Attempt | None = None,
    ) -> None:
        """Count one failed attempt and hold the row (and its queue) until ``next_attempt_at``."""
        row = self._box.rows.get(delivery_id)
        if row is not None and row.state == "pending":
            row.attempts += 1
            row.next_attempt_at = next_attempt_at
            row.last_error, row.last_status = short_error(error), status
            self._keep([] if attempt is None else [attempt])

    async def dead_letter(
        self,
        delivery_id: int,
        *,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> None:
        """Count one failed attempt and give up: the row stops blocking its queue."""
        row = self._box.rows.get(delivery_id)
        if row is not None and row.state == "pending":
            row.state, row.attempts, row.dead_at = "dead", row.attempts + 1, now
            row.last_error, row.last_status = short_error(error), status
            self._keep([] if attempt is None else [attempt])

    async def dead_letter_other_sinks(self, sinks: Sequence[str], *, now: float) -> int:
        """Dead-letter what is pending for sinks not in ``sinks``; return how many rows."""
        box = self._box
        box.disabled = {name: d for name, d in box.disabled.items() if name in sinks}
        gone = [
            row for row in box.rows.values() if row.state == "pending" and row.sink not in sinks
        ]
        for row in gone:
            row.state, row.dead_at, row.last_error = "dead", now, _GONE_SINK
        return len(gone)

    async def record_sink_disabled(
        self, sink: str, *, status: int | None, reason: str, now: float
    ) -> None:
        """Note that ``sink`` was disabled by an answer; a noted sink keeps its ``since``."""
        noted = self._box.disabled.get(sink)
        since = now if noted is None else noted.since
        self._box.disabled[sink] = DisabledSink(sink, since, now, status, short_error(reason))

    async def disabled_sinks(self, sink: str | None = None) -> list[DisabledSink]:
        """Return the sinks noted as disabled (one, or all), by name."""
        box = self._box
        return [box.disabled[name] for name in sorted(box.disabled) if sink in (None, name)]

    async def clear_sink_disabled(self, sink: str | None = None) -> list[DisabledSink]:
        """Forget that ``sink`` (``None``: every sink) was disabled; return what was noted."""
        cleared = await self.disabled_sinks(sink)
        for noted in cleared:
            del self._box.disabled[noted.sink]
        return cleared

    async def dead_letters(self, sink: str | None = None) -> list[DeadLetter]:
        """Return dead-lettered deliveries (of one sink, or all), oldest first."""
        return [self._dead_letter(row) for row in self._chosen(None, sink, "dead")]

    async def requeue(
        self, ids: Sequence[int] | None = None, *, sink: str | None = None, now: float
    ) -> int:
        """Make dead rows pending again, due at ``now`` with no attempts; return how many."""
        chosen = list(self._chosen(ids, sink, "dead"))
        for row in chosen:
            row.state, row.attempts, row.dead_at, row.next_attempt_at = "pending", 0, None, now
        return len(chosen)

    async def purge(self, ids: Sequence[int] | None = None, *, sink: str | None = None) -> int:
        """Delete dead rows; an event left without any stays done now if it has attempts."""
        dead = list(self._chosen(ids, sink, "dead"))
        return self._delete(dead, done_at=time.time(), untried_go=True)

    async def failing_sinks(self, sink: str | None = None) -> list[FailingSink]:
        """Return, per sink, its pending deliveries that failed and wait for a retry."""
        failed: dict[str, list[Row]] = {}
        for row in self._box.rows.values():
            if row.state == "pending" and row.attempts > 0 and sink in (None, row.sink):
                failed.setdefault(row.sink, []).append(row)
        return [_failing(name, failed[name]) for name in sorted(failed)]

    async def pending_count(self, sink: str | None = None) -> int:
        return sum(1 for row in self._box.rows.values() if _pending_of(row, sink))

    async def oldest_pending_enqueued_at(self) -> float | None:
        times = [row.enqueued_at for row in self._box.rows.values() if row.state == "pending"]
        return min(times, default=None)

    async def counts_by_sink(self, state: RowState) -> dict[str, int]:
        """Return ``{sink: rows}`` of the rows in ``state``, by sink name."""
        counts: dict[str, int] = {}
        for row in self._box.rows.values():
            if row.state == state:
                counts[row.sink] = counts.get(row.sink, 0) + 1
        return dict(sorted(counts.items()))

    async def shift_due_times(self, seconds: float) -> int:
        """Move every pending row's due and enqueue times by ``seconds`` (a clock step)."""
        moved = list(self._pending(None))
        for row in moved:
            row.next_attempt_at += seconds
            row.enqueued_at += seconds
        return len(moved)

    def _enqueue(self, events: Sequence[tuple[Event, Sequence[str]]], now: float) -> None:
        """Store each event once and one pending row per sink (checked first: all or nothing)."""
        bodies = [(event, list(sinks), event.to_json()) for event, sinks in _checked(events)]
        box = self._box
        for event, sinks, body in bodies:
            if event.id not in box.events:
                box.events[event.id] = body
                box.last_seq += 1
                box.kept[event.id] = Kept(box.last_seq, now)
            for sink in sinks:
                box.last_id += 1  # as SQLite's AUTOINCREMENT: a pair already there uses an id up
                if (event.id, sink) not in box.pairs:
                    self._add_row(event.id, sink, event.session_sid, now)

    def _add_row(self, event_id: str, sink: str, session_sid: str, now: float) -> None:
        """Add a pending row (its id taken already); its event is no longer done."""
        box = self._box
        box.rows[box.last_id] = Row(box.last_id, event_id, sink, session_sid, now, now)
        box.pairs.add((event_id, sink))
        box.kept[event_id].done_at = None

    def _keep(self, attempts: Sequence[Attempt]) -> None:
        """Keep the attempts whose row is still there, with its event, sink and session."""
        rows = self._box.rows
        self._box.attempts += [
            _record(rows[a.delivery_id], a) for a in attempts if a.delivery_id in rows
        ]

    def _pending_sessions(self) -> set[str]:
        return {row.session_sid for row in self._pending(None)}

    def _heads(self, sink: str) -> list[Row]:
        """The first pending row of each of ``sink``'s queues, in id order."""
        heads: dict[str, Row] = {}
        for row in self._pending(sink):
            heads.setdefault(row.session_sid, row)
        return sorted(heads.values(), key=lambda row: row.id)

    def _pending(self, sink: str | None) -> Iterator[Row]:
        return (row for row in self._box.rows.values() if _pending_of(row, sink))

    def _chosen(self, ids: Sequence[int] | None, sink: str | None, state: str) -> Iterator[Row]:
        wanted = None if ids is None else set(ids)
        for row in self._box.rows.values():
            if (
                row.state == state
                and sink in (None, row.sink)
                and (wanted is None or row.id in wanted)
            ):
                yield row

    def _delete(
        self, rows: Iterable[Row], *, done_at: float | None = None, untried_go: bool = False
    ) -> int:
        """Delete ``rows``, then settle the events left without any; return how many rows.

        ``done_at`` None: such an event goes, with its attempts. Otherwise it stays, done at
        ``done_at``, unless ``untried_go`` and it has no attempt kept.
        """
        box = self._box
        doomed = list(rows)
        for row in doomed:
            del box.rows[row.id]
            box.pairs.discard((row.event_id, row.sink))
        needed = {row.event_id for row in box.rows.values()}
        left = {row.event_id for row in doomed} - needed
        attempted = {a.event_id for a in box.attempts if a.event_id in left}
        gone = left if done_at is None else (left - attempted if untried_go else set())
        for event_id in left - gone:
            box.kept[event_id].done_at = done_at
        self._forget(gone)
        return len(doomed)

    def _forget(self, event_ids: set[str]) -> None:
        """Drop these events and their attempts."""
        box = self._box
        for event_id in event_ids:
            del box.events[event_id], box.kept[event_id]
        if event_ids:
            box.attempts = [a for a in box.attempts if a.event_id not in event_ids]

    def _delivery(self, row: Row) -> Delivery:
        return Delivery(
            id=row.id,
            sink=row.sink,
            event=Event.from_json(self._box.events[row.event_id]),
            attempts=row.attempts,
            enqueued_at=row.enqueued_at,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
            last_status=row.last_status,
        )

    def _dead_letter(self, row: Row) -> DeadLetter:
        return DeadLetter(
            id=row.id,
            sink=row.sink,
            event=Event.from_json(self._box.events[row.event_id]),
            attempts=row.attempts,
            enqueued_at=row.enqueued_at,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
            last_status=row.last_status,
            dead_at=float(row.dead_at or 0.0),
        )


def _checked(
    events: Sequence[tuple[Event, Sequence[str]]],
) -> Iterator[tuple[Event, Sequence[str]]]:
    """Refuse what SQLite's schema refuses before anything is written; skip sinkless events."""
    checked: list[tuple[Event, Sequence[str]]] = []
    for event, sinks in events:
        if isinstance(sinks, str):
            raise TypeError(f"sinks of event {event.id} must be a sequence of names, not a str")
        if any(not isinstance(sink, str) for sink in sinks):
            raise StateError(f"memory state: event {event.id} has a sink that is not a name")
        if sinks:
            checked.append((event, sinks))
    return iter(checked)


def _record(row: Row, attempt: Attempt) -> AttemptRecord:
    return AttemptRecord(
        event_id=row.event_id,
        sink=row.sink,
        session_sid=row.session_sid,
        at=attempt.at,
        latency_seconds=attempt.latency_seconds,
        outcome=attempt.outcome,
        status=attempt.status,
        error=attempt.error,
    )


def _ready(row: Row, now: float | None) -> bool:
    return now is None or row.next_attempt_at <= now


def _pending_of(row: Row, sink: str | None) -> bool:
    return row.state == "pending" and sink in (None, row.sink)


def _failing(sink: str, rows: list[Row]) -> FailingSink:
    most = max(rows, key=lambda row: row.attempts)  # the first (lowest id) of the most tried
    soonest = min(row.next_attempt_at for row in rows)
    return FailingSink(sink, len(rows), most.attempts, soonest, most.last_status, most.last_error)
