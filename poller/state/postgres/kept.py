"""Reading kept events: the one statement behind ``History.history``.

The selection is made of fixed fragments, one per field of the ``HistoryQuery`` that narrows
it (a fragment left out costs the plan nothing, where ``%s IS NULL OR ...`` would leave a
prepared statement's generic plan guessing). The latest ``limit`` events are picked by
``seq``, then each is joined with where it stands for each sink it went to: its outbox row's
state, if any, and the count and latest of its attempts, all found set-wise (one index probe
per event, whatever the selection's size).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from poller.events import Event
from poller.state.views import HistoryQuery, KeptEvent, SinkOutcome

_FILTERS = {
    "session_sid": "e.session_sid = %(session_sid)s",
    "type": "e.type = %(type)s",
    "since": "e.created_at >= %(since)s",
    "event_ids": "e.id = ANY(%(event_ids)s::text[])",
    "sink": (
        "(EXISTS (SELECT 1 FROM attempts a WHERE a.event_id = e.id AND a.sink = %(sink)s) "
        "OR EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.sink = %(sink)s))"
    ),
}
_PICKED = (
    "SELECT e.id, e.seq, e.body, e.created_at, e.done_at FROM events e WHERE {where} "
    "ORDER BY e.seq DESC LIMIT %(limit)s"
)
# One row per event, its sinks in one JSON array (by name, byte for byte as Python sorts):
# the bodies are neither repeated per sink nor sorted (Python puts the rows in seq order).
_OUTCOMES = """
WITH picked AS MATERIALIZED ({picked}),
tried AS (
    SELECT a.event_id, a.sink, count(*) AS n, max(a.id) AS last FROM attempts a
    WHERE a.event_id IN (SELECT id FROM picked) GROUP BY a.event_id, a.sink
), held AS (
    SELECT d.event_id, d.sink, d.state FROM deliveries d
    WHERE d.event_id IN (SELECT id FROM picked)
), outcomes AS (
    SELECT coalesce(t.event_id, h.event_id) AS event_id, json_agg(json_build_array(
        coalesce(t.sink, h.sink), h.state, coalesce(t.n, 0), l.at, l.status, l.error)
        ORDER BY coalesce(t.sink, h.sink) COLLATE "C") AS sinks
    FROM tried t FULL JOIN held h ON h.event_id = t.event_id AND h.sink = t.sink
    LEFT JOIN attempts l ON l.id = t.last
    GROUP BY 1
)
SELECT p.seq, p.body, p.created_at, p.done_at, o.sinks
FROM picked p LEFT JOIN outcomes o ON o.event_id = p.id"""


def history_query(query: HistoryQuery) -> tuple[str, dict[str, Any]]:
    """The statement and parameters selecting ``query``'s events with their outcomes."""
    params: dict[str, Any] = {
        "session_sid": query.session_sid,
        "type": query.type,
        "since": query.since,
        "event_ids": list(query.event_ids) or None,
        "sink": query.sink,
    }
    where = [_FILTERS[name] for name, value in params.items() if value is not None]
    picked = _PICKED.format(where=" AND ".join(where) or "true")
    params["limit"] = query.limit
    return _OUTCOMES.format(picked=picked), params


def fold(rows: Sequence[Sequence[Any]]) -> list[KeptEvent]:
    """Make the statement's rows (one per event, any order) kept events, by seq."""
    return [
        KeptEvent(
            seq=int(seq),
            event=Event.from_json(body),
            detected_at=float(created_at),
            done_at=None if done_at is None else float(done_at),
            sinks=tuple(_outcome(item) for item in sinks or ()),
        )
        for seq, body, created_at, done_at, sinks in sorted(rows, key=operator.itemgetter(0))
    ]


def _outcome(item: Sequence[Any]) -> SinkOutcome:
    sink, state, n, at, status, error = item
    return SinkOutcome(
        sink=str(sink),
        state="delivered" if state is None else state,
        attempts=int(n),
        last_at=None if at is None else float(at),
        last_status=None if status is None else int(status),
        last_error=None if error is None else str(error),
    )
