"""SQLite's own side of the history: migrating a V5 file, and the dump carrying what is kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from poller.state.history import Attempt
from poller.state.snapshot import AttemptRow, EventRow
from poller.state.sqlite import schema
from poller.state.sqlite.db import open_database
from poller.state.sqlite.dump import held_snapshot
from poller.state.sqlite.store import SqliteStore
from poller.state.views import HistoryQuery
from tests.state.cases import SERVICE, SESSION_A, SESSION_B, enqueue, events_of, make_event

V5 = 5


def write_v5_file(path: Path) -> list[str]:
    """A V5 state file with pending rows, as the poller before the history left it.

    The events' rowids run in enqueue order; the rows' enqueue times differ per sink, and one
    event is a dead letter. Returns the event ids in enqueue order.
    """
    db = open_database(path, schema.MIGRATIONS[:V5])
    db.close()
    a1, b2, a3 = (
        make_event(SESSION_A, 1),
        make_event(SESSION_B, 2),
        make_event(SESSION_A, 3, updated=True),
    )
    conn = sqlite3.connect(path)
    try:
        with conn:
            for event in (a1, b2, a3):
                conn.execute(
                    "INSERT INTO events (id, service_sid, session_sid, body) VALUES (?, ?, ?, ?)",
                    (event.id, SERVICE, event.session_sid, event.to_json()),
                )
            rows = [
                (a1.id, "ops", SESSION_A, 10.0, "pending"),
                (a1.id, "slack", SESSION_A, 12.0, "pending"),
                (b2.id, "ops", SESSION_B, 20.0, "dead"),
                (a3.id, "ops", SESSION_A, 30.0, "pending"),
            ]
            conn.executemany(
                "INSERT INTO deliveries (event_id, sink, session_sid, enqueued_at, "
                "next_attempt_at, state) VALUES (?, ?, ?, ?, ?4, ?5)",
                rows,
            )
        assert schema.user_version(conn) == V5
    finally:
        conn.close()
    return [a1.id, b2.id, a3.id]


async def test_a_v5_file_with_pending_rows_migrates_to_v6_with_the_columns_filled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    a1, b2, a3 = write_v5_file(path)
    async with SqliteStore.open(path) as store:
        assert (await store.summary()).schema_version == len(schema.MIGRATIONS) == 6
        kept = await store.history(HistoryQuery())
        assert [k.event.id for k in kept] == [a1, b2, a3]
        assert [k.detected_at for k in kept] == [10.0, 20.0, 30.0]  # the oldest row's
        assert [k.done_at for k in kept] == [None, None, None]
        assert [k.seq for k in kept] == sorted({k.seq for k in kept})
        assert [(s.sink, s.state, s.attempts) for s in kept[1].sinks] == [("ops", "dead", 0)]
        assert events_of(await store.due("ops", None, 10)) == [a1]  # a3 waits behind a1

        later = make_event(SESSION_B, 4)
        await enqueue(store, SESSION_B, [later], ["ops"], now=40.0)
        assert [k.event.id for k in await store.history(HistoryQuery(limit=2))] == [a3, later.id]
    conn = sqlite3.connect(path)
    try:
        types = conn.execute("SELECT type FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()
    assert types == [
        ("interaction.created",),
        ("interaction.created",),
        ("interaction.updated",),
        ("interaction.created",),
    ]


async def test_the_dump_carries_the_kept_events_and_their_attempts(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    e1, e2 = make_event(SESSION_A, 1), make_event(SESSION_A, 2)
    async with SqliteStore.open(path) as store:
        await enqueue(store, SESSION_A, [e1, e2], ["ops"], now=5.0)
        first, second = await store.backlog("ops", None, 10)
        await store.retry_later(
            second.id,
            next_attempt_at=9.0,
            error="HTTP 503",
            status=503,
            attempt=Attempt(second.id, 7.0, 0.5, "retry", 503, "HTTP 503"),
        )
        await store.ack([first.id], history=[Attempt(first.id, 6.0, 0.25, "delivered", 200)])
    with held_snapshot(path) as snapshot:
        events = list(snapshot.events)
        attempts = list(snapshot.attempts)
        deliveries = list(snapshot.deliveries)
    assert [(r.id, r.type, r.created_at, r.done_at) for r in events] == [
        (e1.id, "interaction.created", 5.0, 6.0),
        (e2.id, "interaction.created", 5.0, None),
    ]
    assert all(isinstance(r, EventRow) for r in events) and events[0].seq < events[1].seq
    assert attempts == [
        AttemptRow(e2.id, "ops", SESSION_A, 7.0, 0.5, "retry", 503, "HTTP 503"),
        AttemptRow(e1.id, "ops", SESSION_A, 6.0, 0.25, "delivered", 200, None),
    ]
    assert [d.event_id for d in deliveries] == [e2.id]
