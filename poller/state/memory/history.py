"""The in-memory history: kept events and attempts read from the outbox's tables.

Scans of plain dicts and lists, cheap at a unit test's size; the semantics are the SQLite
backend's (the contract suite holds both to them).
"""

from __future__ import annotations

from collections.abc import Sequence

from poller.events import Event
from poller.state.history import Attempt, History
from poller.state.memory.outbox import MemoryOutbox, Row
from poller.state.views import AttemptRecord, HistoryQuery, KeptEvent, SinkOutcome, SinkState


class MemoryHistory(MemoryOutbox, History):
    """The outbox with its history: what ``MemoryStore`` is made of besides the sessions."""

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Keep attempts whose outcome changed no row; one of a row that is gone is ignored."""
        self._keep(attempts)

    async def history(self, query: HistoryQuery) -> list[KeptEvent]:
        """Return the kept events ``query`` selects, in their original order."""
        box = self._box
        chosen = sorted(
            (event_id for event_id in box.events if self._selects(query, event_id)),
            key=lambda event_id: box.kept[event_id].seq,
        )
        if query.limit is not None:
            chosen = chosen[max(len(chosen) - query.limit, 0) :]
        return [self._kept_event(event_id) for event_id in chosen]

    async def replay(self, sink: str, event_ids: Sequence[str], *, now: float) -> list[str]:
        """Queue kept events again for ``sink`` in their original order; return the ids queued."""
        box = self._box
        wanted = {i for i in event_ids if i in box.events and (i, sink) not in box.pairs}
        queued = sorted(wanted, key=lambda event_id: box.kept[event_id].seq)
        for event_id in queued:
            box.last_id += 1
            self._add_row(event_id, sink, Event.from_json(box.events[event_id]).session_sid, now)
        return queued

    async def prune_history(self, now: float, keep_seconds: float) -> int:
        """Forget events done over ``keep_seconds`` ago (never one with a row), with attempts."""
        box = self._box
        needed = {row.event_id for row in box.rows.values()}
        doomed = {
            event_id
            for event_id, kept in box.kept.items()
            if kept.done_at is not None
            and kept.done_at < now - keep_seconds
            and event_id not in needed
        }
        self._forget(doomed)
        return len(doomed)

    async def recent_attempts(self, sink: str, limit: int) -> list[AttemptRecord]:
        """Return the latest ``limit`` kept attempts for ``sink``, the newest first."""
        mine = [a for a in reversed(self._box.attempts) if a.sink == sink]
        return mine[: max(limit, 0)]

    async def oldest_pending_by_sink(self) -> dict[str, float]:
        """Return ``{sink: enqueue time of its oldest pending row}``, for sinks with one."""
        oldest: dict[str, float] = {}
        for row in self._pending(None):
            oldest[row.sink] = min(oldest.get(row.sink, row.enqueued_at), row.enqueued_at)
        return dict(sorted(oldest.items()))

    async def kept_events(self) -> int:
        """Return how many events the state keeps (pending, dead and done alike)."""
        return len(self._box.events)

    def _selects(self, query: HistoryQuery, event_id: str) -> bool:
        box = self._box
        if query.event_ids and event_id not in query.event_ids:
            return False
        if query.since is not None and box.kept[event_id].detected_at < query.since:
            return False
        if query.sink is not None and query.sink not in self._sinks_of(event_id):
            return False
        if query.session_sid is None and query.type is None:
            return True
        event = Event.from_json(box.events[event_id])
        return query.session_sid in (None, event.session_sid) and query.type in (
            None,
            event.type.value,
        )

    def _sinks_of(self, event_id: str) -> set[str]:
        box = self._box
        sinks = {row.sink for row in box.rows.values() if row.event_id == event_id}
        return sinks | {a.sink for a in box.attempts if a.event_id == event_id}

    def _kept_event(self, event_id: str) -> KeptEvent:
        box = self._box
        kept = box.kept[event_id]
        rows = {row.sink: row for row in box.rows.values() if row.event_id == event_id}
        return KeptEvent(
            seq=kept.seq,
            event=Event.from_json(box.events[event_id]),
            detected_at=kept.detected_at,
            done_at=kept.done_at,
            sinks=tuple(
                self._outcome(event_id, sink, rows.get(sink))
                for sink in sorted(self._sinks_of(event_id))
            ),
        )

    def _outcome(self, event_id: str, sink: str, row: Row | None) -> SinkOutcome:
        tried = [a for a in self._box.attempts if a.event_id == event_id and a.sink == sink]
        last = tried[-1] if tried else None
        state: SinkState = (
            "delivered" if row is None else "dead" if row.state == "dead" else "pending"
        )
        return SinkOutcome(
            sink=sink,
            state=state,
            attempts=len(tried),
            last_at=None if last is None else last.at,
            last_status=None if last is None else last.status,
            last_error=None if last is None else last.error,
        )
