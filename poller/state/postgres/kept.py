"""Reading kept events: the one statement behind ``History.history``.

The selection is made of fixed fragments, one per field of the ``HistoryQuery`` that narrows
it (a fragment left out costs the plan nothing, where ``%s IS NULL OR ...`` would leave a
prepared statement's generic plan guessing). The latest ``limit`` events are picked by
``seq``, then each is joined with where it stands for each sink it went to: its outbox row's
state, if any, and the count and latest of its attempts.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Any

from poller.events import Event
from poller.state.history import HistoryQuery, KeptEvent, SinkOutcome

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
_OUTCOMES = """
SELECT p.seq, p.body, p.created_at, p.done_at, o.sink, o.state, o.n, o.at, o.status, o.error
FROM ({picked}) p LEFT JOIN LATERAL (
    SELECT s.sink, d.state, coalesce(a.n, 0) AS n, a.at, a.status, a.error
    FROM (SELECT x.sink FROM deliveries x WHERE x.event_id = p.id
          UNION SELECT y.sink FROM attempts y WHERE y.event_id = p.id) s
    LEFT JOIN deliveries d ON d.event_id = p.id AND d.sink = s.sink
    LEFT JOIN LATERAL (
        SELECT count(*) OVER () AS n, z.at, z.status, z.error FROM attempts z
        WHERE z.event_id = p.id AND z.sink = s.sink ORDER BY z.id DESC LIMIT 1
    ) a ON true
) o ON true
ORDER BY p.seq, o.sink COLLATE "C\""""


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
    """Fold the statement's rows (one per event and sink, by seq) into kept events."""
    found: list[KeptEvent] = []
    for seq, group in itertools.groupby(rows, key=operator.itemgetter(0)):
        rows_of_event = list(group)
        _, body, created_at, done_at = rows_of_event[0][:4]
        found.append(
            KeptEvent(
                seq=int(seq),
                event=Event.from_json(body),
                detected_at=float(created_at),
                done_at=None if done_at is None else float(done_at),
                sinks=tuple(_outcome(row[4:]) for row in rows_of_event if row[4] is not None),
            )
        )
    return found


def _outcome(row: Sequence[Any]) -> SinkOutcome:
    sink, state, n, at, status, error = row
    return SinkOutcome(
        sink=str(sink),
        state="delivered" if state is None else state,
        attempts=int(n),
        last_at=None if at is None else float(at),
        last_status=None if status is None else int(status),
        last_error=None if error is None else str(error),
    )
