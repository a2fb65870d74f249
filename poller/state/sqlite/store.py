"""``SqliteStore``: every side of the state in one SQLite file, and its lifecycle."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from poller.state.base import StateStore
from poller.state.sqlite.db import Database, open_database
from poller.state.sqlite.history import SqliteHistory
from poller.state.sqlite.outbox import SqliteOutbox, shift_pending
from poller.state.sqlite.schema import user_version
from poller.state.sqlite.sessions import SqliteSessions

if TYPE_CHECKING:
    from poller.state.views import Summary

BACKEND = "sqlite"


class SqliteStore(SqliteSessions, SqliteOutbox, SqliteHistory, StateStore):
    """The poller's SQLite state file, held exclusively by one process (unless ``shared``).

    Every call is one short statement or transaction, made from the event loop's thread (see
    the package docstring).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._last_states = {}

    @classmethod
    def open(cls, path: Path | str, *, shared: bool = False) -> SqliteStore:
        """Lock, check, create (mode 0600) and migrate the state file at ``path``.

        Raises StateLockedError (another process has it), StateCorruptError (not a poller
        state file; left untouched) or StateError (newer schema, I/O errors). ``shared``:
        an operator's command may open the file while a daemon holds it.
        """
        return cls(open_database(Path(path), shared=shared))

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def location(self) -> str:
        return str(self._db.path)

    async def lost(self) -> str | None:
        """Say why the state file is gone or replaced under us (None: it is still there)."""
        return self._db.lost()

    async def shift_due_times(self, seconds: float) -> int:
        """Move the pending deliveries' times by ``seconds`` (see ``outbox.shift_pending``)."""
        with self._db.transaction() as conn:
            return shift_pending(conn, seconds)

    async def close(self) -> None:
        """Close the file and release the lock; closing twice is harmless."""
        self._db.close()

    async def summary(self, now: float | None = None) -> Summary:
        """Return the overview of ``poller state show``: ``schema_version`` is the file's."""
        from poller.state.views import SessionCounts, Summary  # see poller.state.views

        now = time.time() if now is None else now
        sessions = self._db.read(
            "SELECT COUNT(*) FILTER (WHERE gone_at IS NULL), "
            "COUNT(*) FILTER (WHERE gone_at IS NULL AND baselined), "
            "COUNT(*) FILTER (WHERE gone_at IS NOT NULL), "
            "COUNT(*) FILTER (WHERE gone_at IS NULL AND consecutive_failures > 0) "
            "FROM sessions"
        )[0]
        watches = self._db.read("SELECT service_sid, started_at FROM watches ORDER BY service_sid")
        interactions = self._db.read("SELECT COUNT(*) FROM interactions")[0][0]
        return Summary(
            backend=BACKEND,
            location=self.location,
            schema_version=self._schema_version(),
            sessions=SessionCounts(*(int(n) for n in sessions)),
            interactions_tracked=int(interactions),
            outbox=await self.outbox_summary(now),
            watches=tuple((str(sid), float(started)) for sid, started in watches),
        )

    def _schema_version(self) -> int:
        try:
            return user_version(self._db.conn)
        except sqlite3.Error as exc:
            raise self._db.error(exc) from exc
