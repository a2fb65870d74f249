"""Opening the state file safely: the lock, recognising the file, pragmas, migrations.

Nothing is written to an existing file before it is known to be a poller state file of a
version this code understands: a foreign or damaged file is left byte-for-byte as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog

from poller.errors import StateCorruptError, StateError, StateLockedError
from poller.state.sqlite import schema

log = structlog.get_logger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_SECONDS = 5.0
_LEFT_UNTOUCHED = "it was left untouched"


class Database:
    """One open state file: its connection, its lock, and short transactions."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = path
        self.conn = conn
        self._lock_fd: int | None = lock_fd
        self._closed = False
        # Which file this is: if the path later names another file, or none, the state we
        # write goes to a file nobody will ever open again (see ``lost``).
        stat = os.stat(path)
        self._identity = (stat.st_dev, stat.st_ino)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction; any error rolls all of it back."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.error(exc) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self.error(exc) from exc
            raise

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run one query outside any write transaction."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self.error(exc) from exc

    def error(self, exc: sqlite3.Error) -> StateError:
        """Translate a sqlite3 error into the poller's error tree."""
        return StateError(f"state file {self.path}: {exc}")

    def lost(self) -> str | None:
        """Say why the path no longer names the file opened (None: it still does).

        SQLite goes on writing to an unlinked file without an error: a deleted state directory
        or a replaced file would lose everything written from then on, at the next start.
        """
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if not self.path.parent.is_dir():
                return f"its directory {self.path.parent} no longer exists"
            return "the file was removed"
        except OSError as exc:
            return f"it cannot be checked: {exc.strerror}"
        if (stat.st_dev, stat.st_ino) != self._identity:
            return "the path now names another file"
        return None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection (checkpointing the WAL), then release the lock."""
        if self._closed:
            return
        self._closed = True
        try:
            self.conn.close()
        finally:
            if self._lock_fd is not None:
                _release_lock(self._lock_fd)
                self._lock_fd = None


def open_database(
    path: Path, migrations: Sequence[str] = schema.MIGRATIONS, *, shared: bool = False
) -> Database:
    """Lock, check, create (mode 0600) and migrate the state file at ``path``.

    ``shared``: for operator commands (``state show``, ``outbox``) while a daemon runs: when
    another process holds the lock, open the existing, current file without it (SQLite's own
    locking keeps each short transaction safe) instead of failing.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise StateError(f"state file {path}: directory {path.parent} does not exist")
    try:
        lock_fd = _acquire_lock(path)
    except StateLockedError:
        if not shared:
            raise
        return _open_beside_owner(path, schema.latest_version(migrations))
    try:
        _check_existing(path, schema.latest_version(migrations))
        _create(path)
        conn = _connect(path)
        try:
            version = schema.migrate(conn, migrations)
        except BaseException:
            conn.close()
            raise
    except sqlite3.Error as exc:
        _release_lock(lock_fd)
        raise StateError(f"state file {path}: {exc}") from exc
    except BaseException:
        _release_lock(lock_fd)
        raise
    log.debug("state_opened", path=str(path), schema_version=version)
    return Database(path, conn, lock_fd)


def _open_beside_owner(path: Path, latest: int) -> Database:
    if not path.exists():
        raise StateError(f"state file {path} does not exist")
    _check_existing(path, latest)
    _, version, _ = _inspect_read_only(path)
    if version != latest:
        raise StateLockedError(
            f"state file {path} is in use by another poller process and has schema version "
            f"{version}, not {latest}; stop that process first"
        )
    try:
        conn = _connect(path)
    except sqlite3.Error as exc:
        raise StateError(f"state file {path}: {exc}") from exc
    return Database(path, conn, None)


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _acquire_lock(path: Path) -> int:
    sidecar = lock_path(path)
    try:
        fd = os.open(sidecar, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open lock file {sidecar}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise StateLockedError(
            f"state file {path} is in use by another poller process (pid {holder})"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StateError(f"cannot lock {sidecar}: {exc.strerror}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


def _release_lock(fd: int) -> None:
    # Closing the descriptor releases the flock; the sidecar stays (unlinking it would race).
    os.close(fd)


def _check_existing(path: Path, latest: int) -> None:
    """Refuse a file that is not ours or is newer, reading it only."""
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"cannot read state file {path}: {exc.strerror}") from exc
    if not header:
        return  # an empty file: initialise it
    if header != SQLITE_HEADER:
        raise StateCorruptError(
            f"state file {path} is not a SQLite database (its first bytes are not the "
            f"'SQLite format 3' header); expected a poller state file or no file; "
            f"{_LEFT_UNTOUCHED}"
        )
    app_id, version, tables = _inspect_read_only(path)
    if app_id == schema.APPLICATION_ID:
        if version > latest:
            raise StateError(
                f"state file {path} has schema version {version}, newer than the "
                f"{latest} this poller knows; upgrade twilio-proxy-poller or use another "
                f"state.path; {_LEFT_UNTOUCHED}"
            )
        return
    if app_id == 0 and not tables:
        return  # a blank SQLite database: initialise it
    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    raise StateCorruptError(
        f"state file {path} is a SQLite database of another application "
        f"(application_id {app_id:#x}, tables: {shown or 'none'}); expected a poller state "
        f"file (application_id {schema.APPLICATION_ID:#x}); {_LEFT_UNTOUCHED}"
    )


def _inspect_read_only(path: Path) -> tuple[int, int, list[str]]:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as exc:
        raise StateError(f"cannot open state file {path}: {exc}") from exc
    try:
        return schema.application_id(conn), schema.user_version(conn), schema.table_names(conn)
    except sqlite3.DatabaseError as exc:
        raise StateCorruptError(
            f"state file {path} is a damaged SQLite database ({exc}); expected a readable "
            f"poller state file; {_LEFT_UNTOUCHED}"
        ) from exc
    finally:
        conn.close()


def _create(path: Path) -> None:
    # Create it ourselves so the mode is 0600 from the start; an existing file keeps its mode.
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise StateError(f"cannot create state file {path}: {exc.strerror}") from exc


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise StateError(f"state file {path}: cannot use the WAL journal (got {mode})")
        # NORMAL in WAL mode survives a process crash (kill -9); only power loss can lose
        # the last transactions.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn
