"""``open_store``: the one place that chooses a state backend from the state config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from poller.state.base import StateStore
from poller.state.sqlite.store import SqliteStore

if TYPE_CHECKING:
    from poller.config.models import StateConfig


async def open_store(state: StateConfig | Path | str, *, shared: bool = False) -> StateStore:
    """Open the state that ``state`` (the config's ``state``, or a path) names.

    Today a path is the only kind, opened as a SQLite file (exclusively; ``shared``: beside a
    daemon that holds it, for operator commands). Unit tests that want no file construct
    ``poller.state.memory``'s store directly. Raises ``StateError`` and its subclasses.
    """
    path = Path(state) if isinstance(state, str | Path) else state.path
    return SqliteStore.open(path, shared=shared)
