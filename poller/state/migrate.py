"""``poller state migrate``: a SQLite state copied into PostgreSQL, so no re-baseline is needed.

The SQLite file is dumped while its lock is held (the daemon must be stopped, and cannot start
on it until the copy is in), and loaded into the database in one transaction: afterwards the
replicas started on ``state.url`` know every session and interaction, and deliver the pending
outbox in its order, under the same event ids.
"""

from __future__ import annotations

from pathlib import Path

from poller.state.sqlite.dump import held_snapshot


async def migrate_sqlite_to_postgres(
    path: Path, url: str, *, application_name: str = "poller-state-migrate"
) -> dict[str, int]:
    """Copy the state file at ``path`` into the empty PostgreSQL database at ``url``.

    Return the rows copied per table (see ``load``). Raises StateError (and its
    subclasses): the file missing, locked by a poller, foreign or newer; the database not
    empty, unreachable, or refusing the copy; then nothing is written to it.
    """
    # Imported here: the driver loads only for a PostgreSQL target.
    from poller.state.postgres.db import Settings
    from poller.state.postgres.load import load

    with held_snapshot(path) as snapshot:
        return await load(Settings(url, application_name=application_name), snapshot)
