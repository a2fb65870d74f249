"""The SQLite backend's own economy and durability: which rows and statements a call costs,
and what a reopened file still holds (the behaviour itself is the contract suite's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from poller.state.sqlite.store import SqliteStore
from tests.state.cases import FP, SERVICE, SESSION_A, make_event, session_of


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(path) as opened:
        yield opened


class StatementLog:
    """The SQL statements the store's connection runs (sqlite3's trace callback)."""

    def __init__(self, store: SqliteStore) -> None:
        self.statements: list[str] = []
        self._conn = store._db.conn

    def __enter__(self) -> list[str]:
        self._conn.set_trace_callback(self.statements.append)
        return self.statements

    def __exit__(self, *exc: object) -> None:
        self._conn.set_trace_callback(None)


def interaction_reads(statements: Sequence[str]) -> list[str]:
    return [sql for sql in statements if sql.startswith("SELECT") and "FROM interactions" in sql]


def changes(store: SqliteStore) -> int:
    return store._db.conn.total_changes


async def test_commit_poll_writes_only_the_rows_that_changed(store: SqliteStore) -> None:
    fetched = {f"KI{n:03d}": FP for n in range(200)}
    await store.commit_poll(SERVICE, SESSION_A, fetched=fetched, events=[], now=1.0)
    before = changes(store)
    await store.commit_poll(SERVICE, SESSION_A, fetched=fetched, events=[], now=2.0)
    assert changes(store) - before == 1  # the session row only
    fetched = dict(fetched)
    fetched["KI000"] = FP._replace(inbound_resource_status="failed")
    del fetched["KI001"]
    fetched["KI999"] = FP
    before = changes(store)
    await store.commit_poll(SERVICE, SESSION_A, fetched=fetched, events=[], now=3.0)
    assert changes(store) - before == 1 + 2  # one update, one insert; KI001 stays


async def test_commit_poll_given_the_known_set_does_not_read_it_again(
    store: SqliteStore,
) -> None:
    first = {f"KI{n}": FP for n in range(5)}
    await store.commit_poll(SERVICE, SESSION_A, fetched=first, events=[], now=1.0)
    second = {"KI0": FP._replace(inbound_resource_status="failed"), "KI1": FP, "KI7": FP}
    known = await store.known(SESSION_A)
    event = make_event(SESSION_A, 7)
    with StatementLog(store) as statements:
        await store.commit_poll(
            SERVICE, SESSION_A, fetched=second, events=[(event, ["ops"])], now=2.0, known=known
        )
    assert interaction_reads(statements) == []
    assert await store.known(SESSION_A) == {**first, **second}


async def test_commit_poll_without_the_known_set_reads_it_in_the_transaction(
    store: SqliteStore,
) -> None:
    await store.commit_poll(SERVICE, SESSION_A, fetched={"KI1": FP}, events=[], now=1.0)
    with StatementLog(store) as statements:
        await store.commit_poll(SERVICE, SESSION_A, fetched={"KI2": FP}, events=[], now=2.0)
    assert len(interaction_reads(statements)) == 1
    assert await store.known(SESSION_A) == {"KI1": FP, "KI2": FP}


async def test_commit_unchanged_writes_the_session_row_only(store: SqliteStore) -> None:
    known = {f"KI{n}": FP for n in range(5)}
    await store.commit_poll(SERVICE, SESSION_A, fetched=known, events=[], now=1.0)
    await store.record_failure(SESSION_A, "TransientSourceError: 503", 2.0)
    before = changes(store)
    with StatementLog(store) as statements:
        await store.commit_unchanged(
            SERVICE, SESSION_A, now=3.0, activity_marker="m2", status="open", unsettled_until=9.0
        )
    assert changes(store) - before == 1
    assert interaction_reads(statements) == []


async def test_ensure_session_of_a_watched_session_writes_nothing(store: SqliteStore) -> None:
    await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
    with StatementLog(store) as statements:
        state = await store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=2.0)
    assert not any(sql.startswith(("BEGIN", "INSERT", "UPDATE")) for sql in statements)
    assert (state.session_sid, state.new_traffic) == (SESSION_A, False)


async def test_everything_survives_close_and_reopen(path: Path) -> None:
    events = [make_event(SESSION_A, 1), make_event(SESSION_A, 2, updated=True)]
    async with SqliteStore.open(path) as store:
        await store.begin_watch(SERVICE, [], 1.0)
        await store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=1.0)
        await store.commit_poll(
            SERVICE,
            SESSION_A,
            fetched={"KI1": FP},
            events=[(e, ["ops"]) for e in events],
            now=2.0,
            activity_marker="m",
        )
        [head] = await store.due("ops", None, 10)
        await store.dead_letter(head.id, error="400", status=400, now=3.0)
        await store.set_thread_ts("slack", SESSION_A, "9.9")
        before = (
            await store.sessions(),
            await store.dead_letters(),
            await store.due("ops", None, 10),
        )
        summary = await store.summary(now=5.0)
    async with SqliteStore.open(path) as store:
        after = (
            await store.sessions(),
            await store.dead_letters(),
            await store.due("ops", None, 10),
        )
        assert after == before
        assert await store.known(SESSION_A) == {"KI1": FP}
        assert await store.begin_watch(SERVICE, [], 50.0) == 1.0
        assert await store.thread_ts("slack", SESSION_A) == "9.9"
        assert await store.summary(now=5.0) == summary
        assert await session_of(store, SESSION_A) is not None
