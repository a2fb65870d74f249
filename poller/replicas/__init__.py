"""Which watched Services this process polls and delivers: all of them, or its leases.

``base.Ownership`` is the interface the daemon asks; ``SoleOwner`` is the answer of a poller
alone on its state (SQLite); ``leaser.Leaser`` keeps leases in PostgreSQL for several replicas.
"""
