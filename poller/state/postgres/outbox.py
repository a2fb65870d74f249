"""The outbox in PostgreSQL: one row per (event, sink), queues per (sink, session)."""

from __future__ import annotations

from poller.state.base import Outbox
from poller.state.postgres.db import Database
from poller.state.postgres.fence import Fence


class PgOutbox(Outbox):
    """``Outbox`` on the ``Database`` ``_db``; only the owned Services' rows are handed out."""

    _db: Database
    _fence: Fence | None
