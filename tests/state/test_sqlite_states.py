"""SQLite's ``sessions()``: a row unchanged since the last read gives the same state object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from poller.state.sqlite.store import SqliteStore

SERVICE = "KS" + "a" * 32
OTHER = "KS" + "b" * 32
SESSIONS = [f"KC{n:032d}" for n in range(3)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore.open(tmp_path / "state.db")
    await opened.begin_watch(SERVICE, SESSIONS, 100.0)
    yield opened
    await opened.close()


async def test_unchanged_rows_give_the_same_states_and_a_changed_row_a_new_one(
    store: SqliteStore,
) -> None:
    first = await store.sessions(SERVICE)
    await store.commit_unchanged(SERVICE, SESSIONS[1], now=200.0, activity_marker="m")
    again = await store.sessions(SERVICE)
    assert [s.session_sid for s in again] == SESSIONS
    assert again[0] is first[0] and again[2] is first[2]
    assert again[1] is not first[1]
    assert (again[1].baselined, again[1].last_success_at, again[1].activity_marker) == (
        True,
        200.0,
        "m",
    )
    assert (first[1].baselined, first[1].last_success_at) == (False, None)


async def test_each_scope_keeps_its_own_and_a_gone_session_reads_gone(
    store: SqliteStore,
) -> None:
    await store.ensure_session(OTHER, "KC" + "9" * 32, new_traffic=True, now=100.0)
    mine = await store.sessions(SERVICE)
    everything = await store.sessions()
    assert len(everything) == 4 and len(await store.sessions(OTHER)) == 1
    await store.mark_session_gone(SESSIONS[0], 300.0)
    assert (await store.sessions(SERVICE))[0].gone_at == 300.0
    assert (await store.sessions())[0].gone_at == 300.0
    assert (await store.sessions(SERVICE))[2] is mine[2]
    assert everything[1] is (await store.sessions())[1]
