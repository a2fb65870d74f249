"""The pruning of the state: gone sessions past their grace, and history past its keep.

One job for both, run by the daemon every hour and by ``poller once`` at its end; each logs
what went (``sessions_pruned``, ``history_pruned``) only when something did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from poller.config import Config
    from poller.state.base import StateStore

log = structlog.get_logger(__name__)


async def prune_state(store: StateStore, config: Config, now: float) -> tuple[int, int]:
    """Prune sessions, then kept events; return ``(sessions, events)`` forgotten."""
    sessions = await store.prune(now, config.state.prune_after_seconds)
    if sessions:
        log.info("sessions_pruned", sessions=sessions)
    events = await store.prune_history(now, config.delivery.history_seconds)
    if events:
        log.info("history_pruned", events=events, keep_seconds=config.delivery.history_seconds)
    return sessions, events
