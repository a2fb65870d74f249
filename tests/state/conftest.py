"""The state contract suite's backends: every test taking ``store`` runs once on each.

A backend is an id in ``BACKENDS`` and a branch of ``open_backend``. ``postgres`` runs on a
database of its own per test (``tests.postgres``), and skips where there is no server (never
in CI, where ``POLLER_TEST_REQUIRE_POSTGRES=1`` makes that a failure).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from poller.state.base import StateStore
from poller.state.memory.store import MemoryStore
from poller.state.sqlite.store import SqliteStore

BACKENDS = ["memory", "sqlite", "postgres"]


async def open_backend(backend: str, folder: Path, request: pytest.FixtureRequest) -> StateStore:
    """Open an empty store of ``backend``, keeping any file it needs in ``folder``."""
    if backend == "memory":
        return MemoryStore()
    if backend == "sqlite":
        return SqliteStore.open(folder / "state.db")
    if backend == "postgres":
        from poller.state.postgres.db import Settings
        from poller.state.postgres.store import PostgresStore

        url = request.getfixturevalue("pg_url")
        return await PostgresStore.open(Settings(url))
    raise ValueError(f"unknown state backend {backend!r}; expected one of {BACKENDS}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The id of the backend under test."""
    return cast(str, request.param)


@pytest.fixture
async def store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[StateStore]:
    """An empty, open store of the backend under test, closed after the test."""
    opened = await open_backend(backend, tmp_path, request)
    yield opened
    await opened.close()
