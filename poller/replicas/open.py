"""``make_ownership``: the one place that chooses how a replica owns its Services.

A poller alone on its state (SQLite) owns every watched Service (``SoleOwner``); replicas on a
shared PostgreSQL state keep a lease per Service (``poller.replicas.leaser``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poller.errors import ConfigError
from poller.replicas.base import Ownership, SoleOwner

if TYPE_CHECKING:
    from poller.config import Config
    from poller.observe.outage import Outage
    from poller.state.base import StateStore
    from poller.state.postgres.fence import Fence


def replica_id(configured: str | None, *, hostname: str, pid: int) -> str:
    """The replica's id: ``configured`` (``POLLER_REPLICA_ID``) when set, else host and pid."""
    if configured is not None and configured.strip():
        return configured.strip()
    return f"{hostname}-{pid}"


def watched_services(config: Config) -> list[str]:
    """The Service SIDs the config watches, in config order, each once."""
    return list(dict.fromkeys(watch.service_sid for watch in config.watch))


def make_ownership(
    config: Config,
    store: StateStore,
    fence: Fence | None,
    replica: str,
    *,
    outage: Outage | None = None,
) -> Ownership:
    """How ``replica`` owns the config's Services on ``store`` (opened with ``fence``).

    ``outage``: the daemon's, so that a database outage is said once, whoever meets it.

    Raises ``ConfigError`` when the state needs a lease keeper this build cannot make.
    """
    if config.state.backend == "sqlite":
        return SoleOwner(replica)
    if fence is None:
        raise ConfigError(f"state {config.state.where}: a replica on PostgreSQL needs its fence")
    # Imported here: a SQLite poller never loads the PostgreSQL driver.
    from poller.replicas.leaser import Leaser
    from poller.state.postgres.leases import LeaseTable
    from poller.state.postgres.store import PostgresStore

    if not isinstance(store, PostgresStore):
        raise ConfigError(f"state {config.state.where}: a PostgreSQL state was expected")
    return Leaser(
        # A connection of its own: renewals never wait behind the pool's polls.
        LeaseTable(store.db.settings),
        fence,
        replica,
        lease_seconds=config.state.lease_seconds,
        interval_seconds=config.poll.interval_seconds,
        outage=outage,
    )
