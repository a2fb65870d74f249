"""``poller state migrate``: a SQLite state copied into PostgreSQL, whole, once, all or nothing.

The source is built through the SQLite store's own interface (the state a daemon leaves), the
command is the real CLI, and the target is read back with plain SQL on both sides.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from poller.errors import StateError, StateLockedError
from poller.state.base import StateStore
from poller.state.history import Attempt
from poller.state.postgres import schema
from poller.state.postgres.db import Settings, connect
from poller.state.postgres.load import load
from poller.state.postgres.store import PostgresStore
from poller.state.snapshot import SessionRow, Snapshot, WatchRow
from poller.state.sqlite.dump import held_snapshot
from poller.state.sqlite.store import SqliteStore
from poller.state.views import HistoryQuery
from tests.state.cases import (
    CLOSED,
    FP,
    OPEN,
    OTHER_SERVICE,
    SERVICE,
    SESSION_A,
    SESSION_B,
    SESSION_C,
    enqueue,
    make_event,
)
from tests.support import run_poller

PASSWORD = "migrate-pw-7731"  # a test value: it must never be printed


def with_password(url: str) -> str:
    """``url`` with a password (trust authentication ignores it; the output must not show it)."""
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def write_config(folder: Path, state: dict[str, Any] | None = None) -> Path:
    path = folder / "config.yaml"
    config = {
        "twilio": {
            "account_sid": "AC" + "a" * 32,
            "auth_token": "tok-migrate",
            "base_url": "http://127.0.0.1:9",
        },
        "state": state or {"path": str(folder / "state.db")},
        "watch": [{"service_sid": SERVICE, "all_sessions": True}],
        "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def build_state(path: Path) -> None:
    """A state a daemon could leave: every table holds rows, the outbox pending and dead."""
    async with SqliteStore.open(path) as store:
        await store.begin_watch(
            SERVICE,
            [SESSION_A, SESSION_B],
            1.0,
            listed={SESSION_A: ("m-a", "2026-11-27T09:00:00Z"), SESSION_B: ("m-b", None)},
            fingerprints={SESSION_A: OPEN},
        )
        await store.begin_watch(OTHER_SERVICE, [], 2.0)
        await store.commit_poll(
            SERVICE, SESSION_A, fetched={"KI" + "0" * 32: FP}, events=[], now=3.0,
            activity_marker="m-a2", status="open", unsettled_until=903.0,
            session_fingerprint=CLOSED,
        )  # fmt: skip
        first = [make_event(SESSION_A, n) for n in range(1, 5)]
        await enqueue(store, SESSION_A, first, ["ops", "slack"], 4.0)
        await enqueue(store, SESSION_B, [make_event(SESSION_B, 7)], ["ops"], 5.0)
        a1, b7 = await store.due("ops", None, 10)
        # A gap in the ids: the order is what must survive. The history keeps a1's attempt.
        await store.ack([a1.id], history=[Attempt(a1.id, 5.5, 0.25, "delivered", 200)])
        tried = Attempt(b7.id, 5.6, 1.5, "retry", 503, "HTTP 503")
        await store.retry_later(b7.id, next_attempt_at=60.0, error="503", status=503, attempt=tried)
        [s1] = await store.due("slack", None, 10)
        await store.ack([s1.id], history=[Attempt(s1.id, 6.5, 0.5, "delivered", 200)])  # done
        a2, _ = await store.due("ops", None, 10)
        await store.dead_letter(a2.id, error="410 gone", status=410, now=7.0)
        await store.ensure_session(SERVICE, SESSION_C, new_traffic=True, now=8.0)
        await store.record_failure(SESSION_C, "timed out", 9.0)
        await store.mark_session_gone(SESSION_B, 10.0)
        await store.set_thread_ts("slack", SESSION_A, "1700000000.000100")
        await store.set_sink_pace("slack", not_before=12.0, now=11.0)
        await store.record_sink_disabled("teams", status=404, reason="webhook gone", now=13.0)


# What each table must hold after the copy, read the same way on both sides.
TABLES: dict[str, str] = {
    "watches": "service_sid, started_at",
    "sessions": (
        "session_sid, service_sid, baselined, new_traffic, last_success_at, "
        "consecutive_failures, last_error, last_failure_at, activity_marker, status, "
        "unsettled_until, added_at, gone_at, watch_listed, watch_last_interaction"
    ),
    "interactions": "session_sid, sid, date_updated, inbound_status, outbound_status",
    "session_fingerprints": (
        "session_sid, status, closed_reason, date_expiry, date_ended, checked_at"
    ),
    "events": "id, service_sid, session_sid, body, type, created_at, done_at",
    "attempts": "event_id, sink, session_sid, at, latency, outcome, status, error",
    "slack_threads": "sink, session_sid, ts",
    "sink_pacing": "sink, not_before, set_at",
    "disabled_sinks": "sink, since, last_at, status, reason",
}
DELIVERIES = (
    "event_id, sink, session_sid, state, attempts, enqueued_at, next_attempt_at, last_error, "
    "last_status, dead_at"
)


def normal(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """One row comparable across the two: SQLite's 0/1 and whole REALs as PostgreSQL's."""
    return tuple(float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in row)


def sqlite_rows(path: Path, table: str, columns: str, order: str = "1") -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()  # noqa: S608
    return [normal(row) for row in rows]


def pg_rows(url: str, table: str, columns: str, order: str = "1") -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()  # noqa: S608
    return [normal(tuple(int(v) if isinstance(v, bool) else v for v in row)) for row in rows]


def pg_count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    assert row is not None
    return int(row[0])


async def test_migrate_copies_every_row_and_the_outbox_in_its_order(
    tmp_path: Path, pg_url: str
) -> None:
    await build_state(tmp_path / "state.db")
    config = write_config(tmp_path)
    result = run_poller("state", "migrate", "-c", str(config), "--to", with_password(pg_url))
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert "postgres:***@" in result.stdout
    for table, columns in TABLES.items():
        expected = sqlite_rows(tmp_path / "state.db", table, columns, columns)
        assert expected, f"the source has no {table}: the case does not test it"
        assert pg_rows(pg_url, table, columns, columns) == expected, table
    # The events in their original order (numbered anew), one of them done.
    in_order = sqlite_rows(tmp_path / "state.db", "events", "id, done_at", "seq")
    assert pg_rows(pg_url, "events", "id, done_at", "seq") == in_order
    assert [done for _, done in in_order].count(None) == len(in_order) - 1
    same_owner = "attempts a JOIN events e ON (e.id, e.service_sid) = (a.event_id, a.service_sid)"
    assert pg_count(pg_url, same_owner) == 3
    # Deliveries: every pending and dead row with its attempts and times, in the same order
    # (the target's ids are new but keep it), each tagged with its event's Service.
    source = sqlite_rows(tmp_path / "state.db", "deliveries", DELIVERIES, "id")
    assert {row[3] for row in source} == {"pending", "dead"}
    assert pg_rows(pg_url, "deliveries", DELIVERIES, "id") == source
    same_service = (
        "deliveries d JOIN events e ON (e.id, e.service_sid) = (d.event_id, d.service_sid)"
    )
    assert pg_count(pg_url, same_service) == len(source)
    counts = dict(line.strip().split(": ") for line in result.stdout.splitlines()[1:-1])
    assert counts["sessions"] == "3"
    assert counts["interactions"] == str(pg_count(pg_url, "interactions"))
    assert (counts["deliveries_pending"], counts["deliveries_dead"]) == ("6", "1")
    assert (counts["events"], counts["attempts"]) == ("5", "3")


async def test_migrate_refuses_a_target_that_is_not_empty_and_writes_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    await build_state(tmp_path / "state.db")
    config = write_config(tmp_path)
    assert run_poller("state", "migrate", "-c", str(config), "--to", pg_url).returncode == 0
    before = {table: pg_count(pg_url, table) for table in (*TABLES, "deliveries")}
    again = run_poller("state", "migrate", "-c", str(config), "--to", with_password(pg_url))
    assert again.returncode == 2
    (line,) = again.stderr.splitlines()
    assert line.startswith("poller: state error:") and "is not empty (2 watches, 3 sessions" in line
    assert PASSWORD not in again.stdout + again.stderr
    assert {table: pg_count(pg_url, table) for table in before} == before


@pytest.mark.parametrize("table", ["watches", "sessions", "events"])
async def test_one_watch_session_or_event_makes_a_target_not_empty(
    tmp_path: Path, pg_url: str, table: str
) -> None:
    await build_state(tmp_path / "state.db")
    rows = {
        "watches": "INSERT INTO watches VALUES ('KS1', 1)",
        "sessions": "INSERT INTO sessions (session_sid, service_sid, added_at) "
        "VALUES ('KC1', 'KS1', 1)",
        "events": "INSERT INTO events (id, service_sid, session_sid, body, type, created_at) "
        "VALUES ('e1', 'KS1', 'KC1', '{}', 'interaction.created', 1)",
    }
    conn = await connect(Settings(pg_url))
    try:
        await schema.migrate(conn)
        await conn.execute(rows[table])
    finally:
        await conn.close()
    with (
        held_snapshot(tmp_path / "state.db") as snapshot,
        pytest.raises(StateError, match="is not empty"),
    ):
        await load(Settings(pg_url), snapshot)
    assert pg_count(pg_url, table) == 1
    assert sum(pg_count(pg_url, t) for t in (*TABLES, "deliveries")) == 1


async def test_a_failing_copy_leaves_the_target_empty(tmp_path: Path, pg_url: str) -> None:
    row = SessionRow(SESSION_A, SERVICE, True, False, 1.0, 0, None, None, None, None, None,
                     1.0, None, False, None)  # fmt: skip
    broken = Snapshot(
        source="x", schema_version=5, watches=[WatchRow(SERVICE, 1.0)], sessions=[row, row]
    )
    with pytest.raises(StateError, match="duplicate key"):
        await load(Settings(pg_url), broken)
    assert pg_count(pg_url, "watches") == pg_count(pg_url, "sessions") == 0


async def test_migrate_refuses_a_state_file_a_poller_holds(tmp_path: Path, pg_url: str) -> None:
    await build_state(tmp_path / "state.db")
    config = write_config(tmp_path)
    async with SqliteStore.open(tmp_path / "state.db"):  # this process is "the daemon"
        result = run_poller("state", "migrate", "-c", str(config), "--to", pg_url)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "is in use by another poller process" in line
    with psycopg.connect(pg_url) as conn:  # not even the schema was made
        row = conn.execute("SELECT to_regclass('poller_schema')").fetchone()
    assert row == (None,)


def test_migrate_refuses_a_missing_state_file_and_creates_none(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run_poller("state", "migrate", "-c", str(config), "--to", "postgresql://u@h/db")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "does not exist: there is nothing to migrate" in line
    assert not (tmp_path / "state.db").exists()


async def test_migrate_reads_the_target_from_a_file(tmp_path: Path, pg_url: str) -> None:
    await build_state(tmp_path / "state.db")
    config = write_config(tmp_path)
    url_file = tmp_path / "url"
    url_file.write_text(with_password(pg_url) + "\n")
    result = run_poller("state", "migrate", "-c", str(config), "--to-file", str(url_file))
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert pg_count(pg_url, "sessions") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--to", f"mysql://u:{PASSWORD}@127.0.0.1/db"), "--to: expected a postgresql://"),
        (("--to-file", "/nonexistent/url"), "--to-file /nonexistent/url: cannot read the URL"),
        ((), "one of the arguments --to --to-file is required"),
    ],
)
def test_migrate_refuses_a_bad_target_without_showing_it(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    config = write_config(tmp_path)
    result = run_poller("state", "migrate", "-c", str(config), *args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert message in line
    assert PASSWORD not in line


def test_migrate_refuses_a_config_whose_state_is_already_postgres(tmp_path: Path) -> None:
    url = f"postgresql://poller:{PASSWORD}@127.0.0.1:1/poller"
    config = write_config(tmp_path, {"url": url})
    result = run_poller("state", "migrate", "-c", str(config), "--to", url)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "already PostgreSQL (postgresql://poller:***@127.0.0.1:1/poller)" in line
    assert PASSWORD not in line


async def test_dump_reads_sqlite_booleans_and_whole_reals_as_their_types(tmp_path: Path) -> None:
    await build_state(tmp_path / "state.db")
    with held_snapshot(tmp_path / "state.db") as snapshot:
        sessions = {s.session_sid: s for s in snapshot.sessions}
        watches = [w.service_sid for w in snapshot.watches]
        deliveries = list(snapshot.deliveries)
    assert sessions[SESSION_A].baselined is True and sessions[SESSION_C].new_traffic is True
    assert sessions[SESSION_A].watch_listed is True and sessions[SESSION_C].watch_listed is False
    assert isinstance(sessions[SESSION_C].added_at, float)
    assert watches == sorted([SERVICE, OTHER_SERVICE])
    ids = [d.id for d in deliveries]
    assert ids == sorted(ids) and len(ids) == 7
    assert [d.state for d in deliveries].count("dead") == 1
    assert {d.service_sid for d in deliveries} == {SERVICE}


async def test_the_dump_is_read_as_it_is_iterated_under_the_files_lock(tmp_path: Path) -> None:
    await build_state(tmp_path / "state.db")
    with held_snapshot(tmp_path / "state.db") as snapshot:
        with pytest.raises(StateLockedError):
            SqliteStore.open(tmp_path / "state.db")
        # Each iteration reads the table again: a loader may walk it once, lazily.
        assert list(snapshot.interactions) == list(snapshot.interactions)
    async with SqliteStore.open(tmp_path / "state.db"):  # the lock went with the block
        pass


async def answers(store: StateStore) -> dict[str, object]:
    """What a replica would read from ``store``: sessions, known sets, queues, dead letters."""
    sessions = await store.sessions()
    queues: dict[str, object] = {}
    for sink in ("ops", "slack"):
        # Whole queues in order: deliver each head, then the next is due.
        queues[sink] = [
            (d.event.id, d.event.to_json(), d.attempts, d.enqueued_at, d.next_attempt_at,
             d.last_error, d.last_status)
            for d in await store.backlog(sink, 1e12, 100)
        ]  # fmt: skip
    return {
        "watches": [(sid, await store.watch_begun(sid)) for sid in await store.watched_services()],
        "sessions": sessions,
        "known": {s.session_sid: await store.known(s.session_sid) for s in sessions},
        "fingerprints": {
            s.session_sid: await store.session_fingerprint(s.session_sid) for s in sessions
        },
        "threads": await store.thread_ts("slack", SESSION_A),
        "pace": await store.sink_pace("slack"),
        "disabled": await store.disabled_sinks(),
        "queues": queues,
        "dead": [
            (d.sink, d.event.id, d.attempts, d.last_error, d.last_status, d.dead_at)
            for d in await store.dead_letters()
        ],
        "pending": await store.pending_count(),
        "history": await store.history(HistoryQuery()),
        "attempts": {sink: await store.recent_attempts(sink, 10) for sink in ("ops", "slack")},
    }


async def test_the_postgres_store_answers_as_the_sqlite_one_did(
    tmp_path: Path, pg_url: str
) -> None:
    await build_state(tmp_path / "state.db")
    async with SqliteStore.open(tmp_path / "state.db") as sqlite_store:
        before = await answers(sqlite_store)
    assert before["queues"] and before["dead"] and before["known"]
    result = run_poller("state", "migrate", "-c", str(write_config(tmp_path)), "--to", pg_url)
    assert result.returncode == 0, result.stderr
    async with await PostgresStore.open(Settings(pg_url)) as pg_store:
        assert await answers(pg_store) == before
