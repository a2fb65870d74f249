"""``open_store``: the one place that chooses a state backend from the state config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from poller.state.base import StateStore
from poller.state.sqlite.store import SqliteStore

if TYPE_CHECKING:
    from poller.config.models import StateConfig
    from poller.state.postgres.fence import Fence


async def open_store(
    state: StateConfig | Path | str,
    *,
    shared: bool = False,
    fence: Fence | None = None,
    application_name: str = "poller",
) -> StateStore:
    """Open the state that ``state`` (the config's ``state``, or a path) names.

    A path (``state.path``) is a SQLite file, opened exclusively (``shared``: beside a daemon
    that holds it, for operator commands). ``state.url`` is a PostgreSQL database, shared by
    every replica; ``fence``: the leases of the replica that writes (None: an operator's
    command). Unit tests that want no file construct ``poller.state.memory``'s store directly.
    Raises ``StateError`` and its subclasses.
    """
    if not isinstance(state, str | Path) and state.url is not None:
        # Imported here: a SQLite poller never loads the PostgreSQL driver.
        from poller.state.postgres.db import Settings
        from poller.state.postgres.store import PostgresStore

        settings = Settings(state.url.get_secret_value(), application_name=application_name)
        return await PostgresStore.open(settings, fence=fence)
    path = Path(state) if isinstance(state, str | Path) else state.path
    return SqliteStore.open(path, shared=shared)
