"""Finding each (sink, session) queue's head in PostgreSQL: one index probe per queue.

Only the first pending row of a queue can be due, and a queue behind a failing head may hold
many pending rows. SQLite keeps a ``queue_heads`` table by triggers; here a recursive query
skips over the partial index ``deliveries_queue_heads`` (sink, service_sid, session_sid, id
WHERE state = 'pending'): for each Service, the first entry after the previous session is the
next session's head, so each step reads one index entry however long the queue behind it is.
It is one read-only statement (one snapshot): nothing to keep in step under concurrent
writers, and no work added to the writes.

``bench/bench_pg_due.py`` (1,100 queues, 1,000 of them 50 rows behind a failing head) measured
one ``due(limit=100)`` at 0.7x a plain scan of every pending row (0.3x with a fence of 2 of 6
Services), and a heads table kept by PL/pgSQL triggers at 0.13x; but those triggers (a lock
per queue, needed under concurrent writers, then a delete, a probe and an insert per row) made
draining the healthy queues (``due`` + ``ack``) 1.8x to 2.5x slower, and delivery is the hot
path: each ``due`` serves up to a batch, each delivered row costs a write.

The Services walked are the ones owned (a fence's), or, for an operator, every Service with a
pending row of the sink (found by the same kind of skip over the index).
"""

from __future__ import annotations

# The pending rows' columns a Delivery is made of, then dead_at (d: deliveries, e: events).
COLUMNS = (
    "d.id, d.sink, e.body, d.attempts, d.enqueued_at, d.next_attempt_at, d.last_error, "
    "d.last_status, d.dead_at"
)

_EVERY_SERVICE = """
services (sid) AS (
    (SELECT d.service_sid FROM deliveries d
     WHERE d.sink = %(sink)s AND d.state = 'pending' ORDER BY d.service_sid LIMIT 1)
    UNION ALL
    SELECT n.service_sid FROM services s CROSS JOIN LATERAL (
        SELECT d.service_sid FROM deliveries d
        WHERE d.sink = %(sink)s AND d.state = 'pending' AND d.service_sid > s.sid
        ORDER BY d.service_sid LIMIT 1) n
),"""

_OWNED_SERVICES = """
services (sid) AS (SELECT unnest(%(owned)s::text[])),"""

_HEADS = """
heads AS (
    SELECT f.* FROM services s CROSS JOIN LATERAL (
        SELECT d.* FROM deliveries d
        WHERE d.sink = %(sink)s AND d.state = 'pending' AND d.service_sid = s.sid
        ORDER BY d.session_sid, d.id LIMIT 1) f
    UNION ALL
    SELECT n.* FROM heads h CROSS JOIN LATERAL (
        SELECT d.* FROM deliveries d
        WHERE d.sink = %(sink)s AND d.state = 'pending' AND d.service_sid = h.service_sid
        AND d.session_sid > h.session_sid
        ORDER BY d.session_sid, d.id LIMIT 1) n
)"""

# Only the first ``limit`` due heads by id can matter, to the backlog too: every other row of
# the queues has a greater id than its own head. Limiting them first also shows the planner
# how few rows it joins (it guesses thousands from a recursive query, and would scan).
_DUE_HEADS = """
SELECT h.* FROM heads h
WHERE %(now)s::double precision IS NULL OR h.next_attempt_at <= %(now)s
ORDER BY h.id LIMIT %(limit)s"""

_DUE = f"""
SELECT {COLUMNS} FROM ({_DUE_HEADS}) d JOIN events e ON e.id = d.event_id
ORDER BY d.id"""  # noqa: S608 (fixed text)

_BACKLOG = f"""
SELECT {COLUMNS} FROM (
    SELECT d.* FROM ({_DUE_HEADS}) h CROSS JOIN LATERAL (
        SELECT * FROM deliveries x WHERE x.sink = %(sink)s AND x.state = 'pending'
        AND x.service_sid = h.service_sid AND x.session_sid = h.session_sid
        ORDER BY x.id LIMIT %(limit)s) d
    ORDER BY d.id LIMIT %(limit)s) d
JOIN events e ON e.id = d.event_id
ORDER BY d.id"""  # noqa: S608 (fixed text)


def heads_query(*, owned: bool, whole_queues: bool) -> str:
    """The query for ``due`` (the heads) or ``backlog`` (``whole_queues``).

    Parameters: ``sink``, ``now`` (None: timers ignored), ``limit``, and ``owned`` (the
    Services to walk) when ``owned``.
    """
    services = _OWNED_SERVICES if owned else _EVERY_SERVICE
    tail = _BACKLOG if whole_queues else _DUE
    return f"WITH RECURSIVE {services}{_HEADS}{tail}"
