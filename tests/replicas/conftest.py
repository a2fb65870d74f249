"""A migrated PostgreSQL database per test, and lease tables on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from poller.state.postgres import schema
from poller.state.postgres.db import Settings, connect
from poller.state.postgres.leases import LeaseTable


@pytest.fixture
async def migrated(pg_url: str) -> str:
    """The URL of a fresh database with the poller's schema."""
    conn = await connect(Settings(pg_url))
    try:
        await schema.migrate(conn)
    finally:
        await conn.close()
    return pg_url


@pytest.fixture
async def tables(migrated: str) -> AsyncIterator[Callable[[], LeaseTable]]:
    """Make lease tables (each on a connection of its own) on the test's database."""
    made: list[LeaseTable] = []

    def make() -> LeaseTable:
        table = LeaseTable(Settings(migrated, application_name="poller-test"))
        made.append(table)
        return table

    yield make
    for table in made:
        await table.close()
