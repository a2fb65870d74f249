"""The PostgreSQL backend: one database shared by several replicas.

``open_postgres(url, ...)`` (``store.py``) is the entry point; ``sessions.py`` is the session
side, ``outbox.py`` the deliveries (``disabled.py`` the sinks an answer disabled),
``history.py`` the kept events and replay (``attempts.py`` keeps the attempts inside the
outbox's writes, ``kept.py`` reads them back), ``db.py`` the connection pool and how errors
become the poller's, ``schema.py`` the tables and their migrations, ``fence.py`` the check
that a write for a Service is made by its owner at its epoch, ``leases.py`` the lease rows.

Unlike SQLite, every call awaits real network I/O: a transaction is one ``async with`` on a
pooled connection, and nothing inside one ever waits on anything but the database (never an
HTTP call). psycopg (3) is imported only when a PostgreSQL state is configured, so a SQLite
poller never pays for it.
"""
