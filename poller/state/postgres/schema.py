"""The tables of the PostgreSQL state and their migrations.

``poller_schema`` holds one row: the number of migrations applied. Every replica applies what
is missing at start, inside one transaction that first takes a transaction-level advisory lock:
replicas starting together apply each migration once, the others wait and then find nothing
to do. A database whose version is newer than this code is refused (an older replica must not
write a schema it does not know).

Times the poller computes are Unix seconds (``double precision``), as in SQLite; the lease
times are the database's own (``timestamptz`` from ``now()``), never a replica's clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from poller.errors import StateError
from poller.state.postgres.db import Connection

# pg_advisory_xact_lock key: "TPPR" (Twilio Proxy PolleR), as SQLite's application_id.
MIGRATION_LOCK = 0x54505052

_V1 = """
CREATE TABLE meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO meta (key, value) VALUES ('created_at', extract(epoch FROM now())::text);

CREATE TABLE watches (
    service_sid text PRIMARY KEY,
    started_at double precision NOT NULL
);

CREATE TABLE sessions (
    session_sid text PRIMARY KEY,
    service_sid text NOT NULL,
    baselined boolean NOT NULL DEFAULT false,
    new_traffic boolean NOT NULL DEFAULT false,
    last_success_at double precision,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error text,
    last_failure_at double precision,
    activity_marker text,
    status text,
    unsettled_until double precision,
    added_at double precision NOT NULL,
    gone_at double precision,
    watch_listed boolean NOT NULL DEFAULT false,
    watch_last_interaction text
);
CREATE INDEX sessions_by_service ON sessions (service_sid);

CREATE TABLE interactions (
    session_sid text NOT NULL REFERENCES sessions (session_sid) ON DELETE CASCADE,
    sid text NOT NULL,
    date_updated text,
    inbound_status text,
    outbound_status text,
    PRIMARY KEY (session_sid, sid)
);

CREATE TABLE session_fingerprints (
    session_sid text PRIMARY KEY REFERENCES sessions (session_sid) ON DELETE CASCADE,
    status text,
    closed_reason text,
    date_expiry text,
    date_ended text,
    checked_at double precision NOT NULL
);

CREATE TABLE events (
    id text PRIMARY KEY,
    service_sid text NOT NULL,
    session_sid text NOT NULL,
    body text NOT NULL
);

-- One row per (event, sink) until the sink accepts it. service_sid: whose owner delivers it.
CREATE TABLE deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL REFERENCES events (id),
    sink text NOT NULL,
    service_sid text NOT NULL,
    session_sid text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    enqueued_at double precision NOT NULL,
    next_attempt_at double precision NOT NULL,
    last_error text,
    last_status integer,
    dead_at double precision,
    UNIQUE (event_id, sink)
);
CREATE INDEX deliveries_by_state ON deliveries (sink, state, id);
CREATE INDEX deliveries_by_queue ON deliveries (session_sid, sink, state, id);
CREATE INDEX deliveries_by_age ON deliveries (state, enqueued_at);
-- Each (sink, session) queue's head, one probe per queue (poller/state/postgres/queues.py).
CREATE INDEX deliveries_queue_heads ON deliveries (sink, service_sid, session_sid, id)
    WHERE state = 'pending';

CREATE TABLE slack_threads (
    sink text NOT NULL,
    session_sid text NOT NULL,
    ts text NOT NULL,
    PRIMARY KEY (sink, session_sid)
);

CREATE TABLE sink_pacing (
    sink text PRIMARY KEY,
    not_before double precision NOT NULL,
    set_at double precision NOT NULL
);

CREATE TABLE disabled_sinks (
    sink text PRIMARY KEY,
    since double precision NOT NULL,
    last_at double precision NOT NULL,
    status integer,
    reason text NOT NULL
);

-- Who owns each watched Service. owner NULL: released. epoch grows by one at every change
-- of owner (and at every acquisition after an expiry): the fencing token.
CREATE TABLE leases (
    service_sid text PRIMARY KEY,
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    acquired_at timestamptz,
    expires_at timestamptz NOT NULL DEFAULT now()
);

-- The replicas alive now (a heartbeat with an expiry), for the fair share of leases.
CREATE TABLE replicas (
    replica text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
"""

# The history (``poller.state.history``): an event stays after its last delivery, done at
# ``done_at``, with every attempt made at it (the indexes are the queries': ``history.py``,
# ``kept.py``). ``seq`` is the original order (replay follows
# it): the events of a V1 database are numbered in the order of their first delivery, and an
# event V1 left without any delivery (a race of two acks) is what V1 meant to delete.
_V2 = """
DELETE FROM events e WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id);
ALTER TABLE events
    ADD COLUMN type text,
    ADD COLUMN created_at double precision,
    ADD COLUMN done_at double precision,
    ADD COLUMN seq bigint;
UPDATE events e SET type = e.body::jsonb ->> 'type', created_at = f.enqueued_at, seq = f.n
FROM (
    SELECT event_id, min(enqueued_at) AS enqueued_at, row_number() OVER (ORDER BY min(id)) AS n
    FROM deliveries GROUP BY event_id
) AS f
WHERE f.event_id = e.id;
CREATE SEQUENCE events_seq AS bigint OWNED BY events.seq;
SELECT setval('events_seq', coalesce((SELECT max(seq) FROM events), 0) + 1, false);
ALTER TABLE events
    ALTER COLUMN seq SET DEFAULT nextval('events_seq'),
    ALTER COLUMN seq SET NOT NULL,
    ALTER COLUMN type SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL,
    ADD CONSTRAINT events_seq_key UNIQUE (seq);
CREATE INDEX events_by_session ON events (session_sid, seq);
CREATE INDEX events_by_created ON events (created_at);
-- done_at is in no index, and a page keeps room for it: an ack's update of the event is HOT
-- (no index touched). A prune finds the old events by created_at (done_at >= created_at).
ALTER TABLE events SET (fillfactor = 90);

-- One row per attempt at a delivery, kept with its event (and gone with it).
-- service_sid: the event's, for the owners' filters, as in deliveries.
CREATE TABLE attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    sink text NOT NULL,
    service_sid text NOT NULL,
    session_sid text NOT NULL,
    at double precision NOT NULL,
    latency double precision NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead', 'disabled')),
    status integer,
    error text
);
CREATE INDEX attempts_by_sink ON attempts (sink, id DESC);
CREATE INDEX attempts_by_event ON attempts (event_id, sink, id);
"""

# Append only: MIGRATIONS[n] takes a database from version n to version n + 1.
MIGRATIONS: Sequence[str] = (_V1, _V2)


def latest_version(migrations: Sequence[str] = MIGRATIONS) -> int:
    return len(migrations)


async def migrate(conn: Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Apply what the database lacks under the migration lock; return the final version.

    Raises StateError for a database newer than ``migrations`` (nothing is changed).
    """
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await cur.execute(
            "CREATE TABLE IF NOT EXISTS poller_schema "
            "(version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await cur.execute("SELECT max(version) FROM poller_schema")
        row = await cur.fetchone()
        version = 0 if row is None or row[0] is None else int(row[0])
        if version > len(migrations):
            raise StateError(
                f"the state database is at schema version {version}, newer than this poller "
                f"knows ({len(migrations)}): upgrade the poller"
            )
        for target, script in enumerate(migrations[version:], start=version + 1):
            await cur.execute(script.encode())
            await cur.execute("INSERT INTO poller_schema (version) VALUES (%s)", (target,))
            version = target
    return version


async def schema_version(conn: Connection) -> int:
    async with conn.cursor() as cur:
        await cur.execute("SELECT max(version) FROM poller_schema")
        row = await cur.fetchone()
    return 0 if row is None or row[0] is None else int(row[0])
