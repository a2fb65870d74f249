"""SQLite state: watched sessions, known interactions, and the durable outbox.

``Store.open(path)`` is the entry point; see ``store.py`` for the sessions side, ``outbox.py``
for deliveries, ``db.py`` for how the file is opened and ``schema.py`` for its tables.
"""

from __future__ import annotations

from poller.state.models import DeadLetter, Delivery, DisabledSink, FailingSink, SessionState
from poller.state.store import Store

__all__ = ["DeadLetter", "Delivery", "DisabledSink", "FailingSink", "SessionState", "Store"]
