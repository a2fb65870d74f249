"""The SQLite store knows when its file is no longer at its path.

(A clock step moving due times is the contract suite's: ``test_contract_outbox.py``.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from poller.state.sqlite.store import SqliteStore


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
