"""The store knows when its file is no longer at its path, and moves due times on a step."""

from __future__ import annotations

import shutil
from pathlib import Path

from poller.state.sqlite.store import SqliteStore
from tests.delivery.test_delivery import T0, enqueue, session
from tests.sink_contract_cases import make_event


async def test_the_file_still_in_place_is_not_lost(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "state.db") as store:
        assert await store.lost() is None


async def test_a_removed_file_is_lost(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "state.db") as store:
        (tmp_path / "state.db").unlink()
        assert await store.lost() == "the file was removed"


async def test_a_removed_directory_is_lost_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "var"
    folder.mkdir()
    async with SqliteStore.open(folder / "state.db") as store:
        shutil.rmtree(folder)
        assert await store.lost() == f"its directory {folder} no longer exists"


async def test_a_file_replaced_at_the_path_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStore.open(path) as store:
        copy = tmp_path / "copy.db"
        shutil.copyfile(path, copy)
        copy.replace(path)  # a restore over a running daemon: another inode
        assert await store.lost() == "the path now names another file"


async def test_a_clock_step_moves_due_and_enqueue_times_of_pending_rows_only(
    tmp_path: Path,
) -> None:
    async with SqliteStore.open(tmp_path / "state.db") as store:
        kept, dead = make_event(session_sid=session(1)), make_event(session_sid=session(2))
        await enqueue(store, [kept, dead], ["hook"], T0)
        rows = {d.event.id: d for d in await store.due("hook", None, 10)}
        await store.retry_later(rows[kept.id].id, next_attempt_at=T0 + 60, error="503", status=503)
        await store.dead_letter(rows[dead.id].id, error="410", status=410, now=T0)

        assert await store.shift_due_times(-3600.0) == 1
        assert await store.due("hook", T0 - 3600 + 59.9, 10) == []  # the queue head moved too
        (row,) = await store.due("hook", T0 - 3600 + 60, 10)
        assert (row.enqueued_at, row.next_attempt_at) == (T0 - 3600, T0 - 3600 + 60)
        assert await store.oldest_pending_enqueued_at() == T0 - 3600
        (letter,) = await store.dead_letters("hook")
        assert letter.enqueued_at == T0
