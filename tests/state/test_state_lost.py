"""The store knows when its file is no longer at its path, and moves due times on a step."""

from __future__ import annotations

import shutil
from pathlib import Path

from poller.state import Store
from tests.delivery.test_delivery import T0, enqueue, session
from tests.sink_contract_cases import make_event


def test_the_file_still_in_place_is_not_lost(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        assert store.lost() is None


def test_a_removed_file_is_lost(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        (tmp_path / "state.db").unlink()
        assert store.lost() == "the file was removed"


def test_a_removed_directory_is_lost_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "var"
    folder.mkdir()
    with Store.open(folder / "state.db") as store:
        shutil.rmtree(folder)
        assert store.lost() == f"its directory {folder} no longer exists"


def test_a_file_replaced_at_the_path_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        copy = tmp_path / "copy.db"
        shutil.copyfile(path, copy)
        copy.replace(path)  # a restore over a running daemon: another inode
        assert store.lost() == "the path now names another file"


def test_a_clock_step_moves_due_and_enqueue_times_of_pending_rows_only(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        kept, dead = make_event(session_sid=session(1)), make_event(session_sid=session(2))
        enqueue(store, [kept, dead], ["hook"], T0)
        rows = {d.event.id: d for d in store.due("hook", None, 10)}
        store.retry_later(rows[kept.id].id, next_attempt_at=T0 + 60, error="503", status=503)
        store.dead_letter(rows[dead.id].id, error="410", status=410, now=T0)

        assert store.shift_due_times(-3600.0) == 1
        assert store.due("hook", T0 - 3600 + 59.9, 10) == []  # the queue head moved too
        (row,) = store.due("hook", T0 - 3600 + 60, 10)
        assert (row.enqueued_at, row.next_attempt_at) == (T0 - 3600, T0 - 3600 + 60)
        assert store.oldest_pending_enqueued_at() == T0 - 3600
        (letter,) = store.dead_letters("hook")
        assert letter.enqueued_at == T0
