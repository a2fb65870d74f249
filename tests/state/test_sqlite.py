"""SQLite's own matters: the file's mode, the lock, recognising the file, WAL, migrations, shared.

What every backend must do is in the contract suite beside this file; what is here holds for
the SQLite file alone.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from poller.config.models import StateConfig
from poller.errors import StateCorruptError, StateError, StateLockedError
from poller.state.open import open_store
from poller.state.sqlite import schema
from poller.state.sqlite.db import open_database
from poller.state.sqlite.store import SqliteStore
from poller.twilio.records import Fingerprint

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "KS" + "a" * 32
SESSION_A = "KC" + "a" * 32
FP = Fingerprint("2026-11-27T10:00:00Z", "received", "delivered")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count_rows(path: Path, table: str) -> int:
    """Count rows through a second connection (WAL lets it read beside the store)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        conn.close()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def header_of(path: Path) -> bytes:
    return path.read_bytes()[:16]


def exists(path: Path) -> bool:
    return path.exists()


def touch(path: Path, mode: int = 0o600) -> None:
    """Leave an empty file with ``mode`` at ``path``."""
    path.touch()
    path.chmod(mode)


async def session_sids(store: SqliteStore) -> list[str]:
    return [s.session_sid for s in await store.sessions()]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(path) as opened:
        yield opened


# ---- the file ------------------------------------------------------------------------------


async def test_new_state_file_and_lock_file_have_mode_0600(path: Path) -> None:
    async with SqliteStore.open(path):
        assert mode_of(path) == 0o600
        assert mode_of(Path(f"{path}.lock")) == 0o600


async def test_existing_file_keeps_its_mode(path: Path) -> None:
    touch(path, 0o640)
    async with SqliteStore.open(path):
        pass
    assert mode_of(path) == 0o640


def test_state_file_uses_wal_normal_sync_and_foreign_keys(store: SqliteStore, path: Path) -> None:
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()
    conn = store._db.conn
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


async def test_new_file_is_marked_with_application_id_and_latest_version(path: Path) -> None:
    async with SqliteStore.open(path) as store:
        assert (await store.summary()).schema_version == schema.latest_version()
    conn = sqlite3.connect(path)
    try:
        assert schema.application_id(conn) == schema.APPLICATION_ID
        assert schema.user_version(conn) == len(schema.MIGRATIONS)
    finally:
        conn.close()


async def test_empty_file_is_initialised(path: Path) -> None:
    touch(path)
    async with SqliteStore.open(path) as store:
        await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
        assert await session_sids(store) == [SESSION_A]


async def test_blank_sqlite_database_at_version_0_is_migrated(path: Path) -> None:
    conn = sqlite3.connect(path)  # a valid SQLite file: version 0, no tables
    conn.execute("CREATE TABLE scratch (x)")
    conn.execute("DROP TABLE scratch")
    conn.close()
    assert header_of(path) == b"SQLite format 3\x00"
    async with SqliteStore.open(path) as store:
        assert (await store.summary()).schema_version == len(schema.MIGRATIONS)


async def test_migrations_apply_in_order_and_keep_data(path: Path) -> None:
    async with SqliteStore.open(path) as store:
        await store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=1.0)
    extra = "CREATE TABLE later (x INTEGER); INSERT INTO later VALUES (42);"
    async with SqliteStore(open_database(path, [*schema.MIGRATIONS, extra])) as store:
        assert (await store.summary()).schema_version == len(schema.MIGRATIONS) + 1
        assert await session_sids(store) == [SESSION_A]
        assert count_rows(path, "later") == 1


async def test_failing_migration_rolls_back_and_keeps_the_old_version(path: Path) -> None:
    await SqliteStore.open(path).close()
    broken = "CREATE TABLE half (x INTEGER); INSERT INTO missing VALUES (1);"
    with pytest.raises(StateError, match="no such table: missing"):
        open_database(path, [*schema.MIGRATIONS, broken])
    conn = sqlite3.connect(path)
    try:
        assert schema.user_version(conn) == len(schema.MIGRATIONS)
        assert "half" not in schema.table_names(conn)
    finally:
        conn.close()
    await SqliteStore.open(path).close()  # the lock was released


async def test_newer_schema_version_is_refused_and_file_untouched(path: Path) -> None:
    await SqliteStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = sha256(path)
    newer = rf"schema version 99, newer than the {schema.latest_version()} "
    with pytest.raises(StateError, match=newer) as info:
        SqliteStore.open(path)
    assert not isinstance(info.value, StateCorruptError | StateLockedError)
    assert str(path) in str(info.value)
    assert sha256(path) == before


def test_random_bytes_are_refused_and_left_untouched(path: Path) -> None:
    path.write_bytes(b"\x00not sqlite\xff" + os.urandom(4096))
    before = sha256(path)
    with pytest.raises(StateCorruptError, match="is not a SQLite database") as info:
        SqliteStore.open(path)
    assert str(path) in str(info.value)
    assert "expected a poller state file" in str(info.value)
    assert sha256(path) == before


def test_short_text_file_is_refused_without_showing_its_content(path: Path) -> None:
    path.write_text("token=hunter2\n")
    with pytest.raises(StateCorruptError) as info:
        SqliteStore.open(path)
    assert "hunter2" not in str(info.value)
    assert path.read_text() == "token=hunter2\n"


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_foreign_sqlite_database_is_refused_and_left_untouched(
    path: Path, journal_mode: str
) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("INSERT INTO users VALUES ('ann')")
    conn.commit()
    conn.close()
    before = sha256(path)
    with pytest.raises(StateCorruptError, match="another application") as info:
        SqliteStore.open(path)
    message = str(info.value)
    assert str(path) in message
    assert "tables: users" in message
    assert f"{schema.APPLICATION_ID:#x}" in message
    assert sha256(path) == before


def test_sqlite_file_with_another_application_id_is_refused(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    before = sha256(path)
    with pytest.raises(StateCorruptError, match="application_id 0x4d2"):
        SqliteStore.open(path)
    assert sha256(path) == before


def test_damaged_sqlite_file_is_refused_and_left_untouched(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4080)
    before = sha256(path)
    with pytest.raises(StateCorruptError, match="damaged SQLite database"):
        SqliteStore.open(path)
    assert sha256(path) == before


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="does not exist"):
        SqliteStore.open(tmp_path / "nowhere" / "state.db")


# ---- the lock ------------------------------------------------------------------------------

_OPEN_IN_CHILD = """
import asyncio, sys
from poller.config.models import StateConfig
from poller.errors import StateLockedError
from poller.state.sqlite.store import SqliteStore
try:
    asyncio.run(SqliteStore.open(sys.argv[1]).close())
except StateLockedError as exc:
    print(exc)
    sys.exit(3)
"""


def run_child(code: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_second_process_is_refused_while_the_store_is_open(store: SqliteStore, path: Path) -> None:
    child = run_child(_OPEN_IN_CHILD, path)
    assert child.returncode == 3, child.stderr
    assert child.stdout.strip() == (
        f"state file {path} is in use by another poller process (pid {os.getpid()})"
    )


async def test_second_process_may_open_after_close(path: Path) -> None:
    await SqliteStore.open(path).close()
    child = run_child(_OPEN_IN_CHILD, path)
    assert child.returncode == 0, child.stdout + child.stderr


async def test_second_open_in_the_same_process_is_refused_until_close(path: Path) -> None:
    first = SqliteStore.open(path)
    with pytest.raises(
        StateLockedError, match=f"in use by another poller process .pid {os.getpid()}"
    ):
        SqliteStore.open(path)
    await first.close()
    await first.close()  # closing twice is harmless
    await SqliteStore.open(path).close()


_COMMIT_THEN_CRASH = """
import asyncio, os, signal, sys
from poller.events import Event, EventType
from poller.twilio.records import Fingerprint
from poller.state.sqlite.store import SqliteStore
store = SqliteStore.open(sys.argv[1])
event = Event(id="evt_crash", type=EventType.CREATED, service_sid="KS1", session_sid="KC1",
              interaction_sid="KI1", interaction={"sid": "KI1"}, timestamp="t")
asyncio.run(store.commit_poll("KS1", "KC1", fetched={"KI1": Fingerprint("d", "i", "o")},
                              events=[(event, ["ops"])], now=5.0))
os.kill(os.getpid(), signal.SIGKILL)
"""


async def test_committed_poll_survives_kill_9_and_the_lock_is_released(path: Path) -> None:
    child = run_child(_COMMIT_THEN_CRASH, path)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert exists(Path(f"{path}-wal"))  # the commit was still only in the WAL
    async with SqliteStore.open(path) as store:
        assert await store.known("KC1") == {"KI1": Fingerprint("d", "i", "o")}
        assert [d.event.id for d in await store.due("ops", None, 10)] == ["evt_crash"]


# ---- beside a daemon (shared=) -------------------------------------------------------------


async def test_a_shared_open_beside_the_holder_sees_its_commits_and_leaves_the_lock(
    store: SqliteStore, path: Path
) -> None:
    await store.commit_poll(SERVICE, SESSION_A, fetched={"KI1": FP}, events=[], now=5.0)
    async with SqliteStore.open(path, shared=True) as beside:
        assert await beside.known(SESSION_A) == {"KI1": FP}
    with pytest.raises(StateLockedError, match="in use by another poller process"):
        SqliteStore.open(path)  # closing the shared store did not release the holder's lock
    assert await store.known(SESSION_A) == {"KI1": FP}


def test_a_shared_open_refuses_a_held_file_of_another_schema_version(path: Path) -> None:
    holder = open_database(path, schema.MIGRATIONS[:1])
    try:
        with pytest.raises(StateLockedError, match=r"has schema version 1, not \d+; stop"):
            SqliteStore.open(path, shared=True)
    finally:
        holder.close()


# ---- chosen by the state config ------------------------------------------------------------


@pytest.mark.parametrize("given", ["config", "path"])
async def test_open_store_opens_the_configured_path_as_sqlite(path: Path, given: str) -> None:
    state = StateConfig(path=path) if given == "config" else str(path)
    async with await open_store(state) as store:
        assert isinstance(store, SqliteStore)
        summary = await store.summary()
    assert (summary.backend, summary.location) == ("sqlite", str(path))
    shown = summary.to_json()
    assert (shown["backend"], shown["path"]) == ("sqlite", str(path))
    assert shown["schema_version"] == schema.latest_version()
