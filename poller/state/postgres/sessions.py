"""The session side in PostgreSQL: watches, sessions, known interactions, threads, pacing."""

from __future__ import annotations

from poller.state.base import SessionStore
from poller.state.postgres.db import Database
from poller.state.postgres.fence import Fence


class PgSessions(SessionStore):
    """``SessionStore`` on the ``Database`` ``_db``; writes for a Service are fenced."""

    _db: Database
    _fence: Fence | None
