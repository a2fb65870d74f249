"""The connection pool, transactions, and how the driver's errors become the poller's.

Every connection is set up the same way: ``statement_timeout`` (a statement that takes too
long is cancelled, and the call fails like any other), ``idle_in_transaction_session_timeout``
(a transaction left open by a stuck process does not hold its locks for ever), an
``application_name`` that names the replica in ``pg_stat_activity``, and ``jit`` off: every
statement is short, and the one that reads many kept events (``poller events list``) spent
more compiling than running (0.7 s of 2.9 s over 100,000 events).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import TupleRow

from poller.config.validators import redact_url
from poller.errors import StateError, StateUnavailableError

Cursor = psycopg.AsyncCursor[TupleRow]
Connection = psycopg.AsyncConnection[TupleRow]

CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_MS = 15_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
POOL_MAX_SIZE = 16


@dataclass(frozen=True)
class Settings:
    """How to reach the database; ``url`` may hold the password (never shown)."""

    url: str
    application_name: str = "poller"
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
    idle_in_transaction_timeout_ms: int = IDLE_IN_TRANSACTION_TIMEOUT_MS
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS

    @property
    def location(self) -> str:
        return redact_url(self.url)

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": self.application_name[:63],
            "options": (
                f"-c statement_timeout={self.statement_timeout_ms} "
                f"-c idle_in_transaction_session_timeout={self.idle_in_transaction_timeout_ms} "
                "-c jit=off"
            ),
        }


def describe(exc: BaseException) -> str:
    """One line for a driver error: its first line of substance, never the password."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # libpq says "connection failed: connection to server at ... failed: FATAL: ..."; keep
    # every line (each names a host tried) on one line.
    return "; ".join(lines)


def translate(exc: BaseException, location: str) -> StateError:
    """The poller's error for a driver error: unreachable, or any other state error."""
    message = f"state database {location}: {describe(exc)}"
    if isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolTimeout | OSError):
        return StateUnavailableError(message)
    if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.AdminShutdown):
        return StateUnavailableError(message)
    return StateError(message)


async def connect(settings: Settings) -> Connection:
    """One connection of its own (migrations, the lease keeper), autocommit."""
    try:
        return await psycopg.AsyncConnection.connect(settings.url, **settings.connect_kwargs())
    except (psycopg.Error, OSError) as exc:
        raise translate(exc, settings.location) from None


class Database:
    """A pool of connections to the state database, and short transactions on it."""

    def __init__(self, settings: Settings, pool: psycopg_pool.AsyncConnectionPool[Connection]):
        self.settings = settings
        self.pool = pool
        self._closed = False

    @classmethod
    async def open(cls, settings: Settings, *, max_size: int = POOL_MAX_SIZE) -> Database:
        """Open the pool (connections are made as they are needed, and made again after a
        restart of the server)."""
        pool: psycopg_pool.AsyncConnectionPool[Connection] = psycopg_pool.AsyncConnectionPool(
            settings.url,
            min_size=1,
            max_size=max_size,
            kwargs=settings.connect_kwargs(),
            open=False,
            timeout=settings.connect_timeout,
            # A connection the server dropped (a restart) is found before it is handed out.
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            reconnect_timeout=0,  # never give up reconnecting; each call fails on its own
            name="poller-state",
        )
        await pool.open(wait=False)
        return cls(settings, pool)

    @property
    def location(self) -> str:
        return self.settings.location

    def error(self, exc: BaseException) -> StateError:
        return translate(exc, self.location)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Cursor]:
        """Run the block in one transaction; any error rolls all of it back.

        The block must await nothing but its own statements.
        """
        try:
            async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except (psycopg.Error, psycopg_pool.PoolTimeout, OSError) as exc:
            raise self.error(exc) from None

    async def read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[TupleRow]:
        """Run one query (autocommit) and return its rows."""
        try:
            async with self.pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(sql, params)
                return await cur.fetchall() if cur.description is not None else []
        except (psycopg.Error, psycopg_pool.PoolTimeout, OSError) as exc:
            raise self.error(exc) from None

    async def reachable(self) -> bool:
        """Whether a trivial query works now (for readiness)."""
        try:
            await self.read("SELECT 1")
        except StateError:
            return False
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.pool.close()
