"""The in-memory state backend, shipped for unit tests as APScheduler ships ``MemoryJobStore``.

``poller.state.memory.store.MemoryStore`` keeps nothing across restarts and is not for
production; ``outbox.py`` holds its outbox half, ``history.py`` what it keeps after delivery.
"""
