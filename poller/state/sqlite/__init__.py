"""The SQLite backend: one local state file, held by one process.

``SqliteStore.open(path)`` (``store.py``) is the entry point; ``sessions.py`` is the session
side, ``outbox.py`` the deliveries, ``history.py`` what is kept after delivery, ``db.py`` how
the file is opened and locked, ``schema.py`` its tables and migrations.

The one mechanism by which its coroutines do their I/O: each runs its sqlite3 calls directly
on the event loop's thread, without a thread pool. The file is local and every call is one
short statement or transaction (WAL, ``synchronous = NORMAL``), so a call blocks the loop for
less time than handing it to a thread would cost; and since a call never awaits inside a
transaction, no other coroutine ever sees one half done. A backend that talks over a network
awaits its real I/O instead.
"""
