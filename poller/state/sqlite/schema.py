"""The schema of the state file and its migrations.

``PRAGMA application_id`` marks a file as ours; ``PRAGMA user_version`` is the number of
migrations applied. Each migration runs in one transaction together with the version bump, so
a file is always at exactly one version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

# "TPPR" (Twilio Proxy PolleR): marks a SQLite file as a poller state file.
APPLICATION_ID = 0x54505052

_V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE watches (
    service_sid TEXT PRIMARY KEY,
    started_at REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE sessions (
    session_sid TEXT PRIMARY KEY,
    service_sid TEXT NOT NULL,
    baselined INTEGER NOT NULL DEFAULT 0,
    new_traffic INTEGER NOT NULL DEFAULT 0,
    last_success_at REAL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_failure_at REAL,
    activity_marker TEXT,
    status TEXT,
    unsettled_until REAL,
    added_at REAL NOT NULL,
    gone_at REAL
) WITHOUT ROWID;
CREATE INDEX sessions_by_service ON sessions (service_sid);

CREATE TABLE interactions (
    session_sid TEXT NOT NULL REFERENCES sessions (session_sid) ON DELETE CASCADE,
    sid TEXT NOT NULL,
    date_updated TEXT,
    inbound_status TEXT,
    outbound_status TEXT,
    PRIMARY KEY (session_sid, sid)
) WITHOUT ROWID;

-- A rowid table: bodies are too large for WITHOUT ROWID to pay off.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    service_sid TEXT NOT NULL,
    session_sid TEXT NOT NULL,
    body TEXT NOT NULL
);

CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL REFERENCES events (id),
    sink TEXT NOT NULL,
    session_sid TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    last_status INTEGER,
    dead_at REAL,
    UNIQUE (event_id, sink)
);
CREATE INDEX deliveries_by_state ON deliveries (sink, state, id);
-- Per (session, sink) queue in order: finds a queue's head, and a session's pending rows.
CREATE INDEX deliveries_by_queue ON deliveries (session_sid, sink, state, id);
CREATE INDEX deliveries_by_age ON deliveries (state, enqueued_at);

-- The first pending delivery of every (sink, session) queue, kept by the triggers below, so
-- due() reads one row per queue instead of every pending row behind a failing head.
CREATE TABLE queue_heads (
    sink TEXT NOT NULL,
    session_sid TEXT NOT NULL,
    delivery_id INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    PRIMARY KEY (sink, session_sid)
) WITHOUT ROWID;
CREATE INDEX queue_heads_in_order ON queue_heads (sink, delivery_id, next_attempt_at);

-- Ids only grow, so a queue that already has a head keeps it.
CREATE TRIGGER deliveries_head_on_insert AFTER INSERT ON deliveries
WHEN NEW.state = 'pending'
BEGIN
    INSERT OR IGNORE INTO queue_heads
    VALUES (NEW.sink, NEW.session_sid, NEW.id, NEW.next_attempt_at);
END;

CREATE TRIGGER deliveries_head_on_update AFTER UPDATE OF state, next_attempt_at ON deliveries
BEGIN
    DELETE FROM queue_heads WHERE sink = NEW.sink AND session_sid = NEW.session_sid;
    INSERT INTO queue_heads
    SELECT sink, session_sid, id, next_attempt_at FROM deliveries
    WHERE session_sid = NEW.session_sid AND sink = NEW.sink AND state = 'pending'
    ORDER BY id LIMIT 1;
END;

CREATE TRIGGER deliveries_head_on_delete AFTER DELETE ON deliveries
WHEN OLD.state = 'pending'
BEGIN
    DELETE FROM queue_heads WHERE sink = OLD.sink AND session_sid = OLD.session_sid;
    INSERT INTO queue_heads
    SELECT sink, session_sid, id, next_attempt_at FROM deliveries
    WHERE session_sid = OLD.session_sid AND sink = OLD.sink AND state = 'pending'
    ORDER BY id LIMIT 1;
END;

CREATE TABLE slack_threads (
    sink TEXT NOT NULL,
    session_sid TEXT NOT NULL,
    ts TEXT NOT NULL,
    PRIMARY KEY (sink, session_sid)
) WITHOUT ROWID;

INSERT INTO meta (key, value) VALUES ('created_at', strftime('%s', 'now'));
"""

# What the Sessions list showed of each session when its watch began: the
# date_last_interaction (NULL: none listed, or the session did not exist then) that splits the
# session's interactions into its baseline and its events. "Listed" says the listing showed
# the session; the marker is kept in activity_marker until the baseline.
_V2 = """
ALTER TABLE sessions ADD COLUMN watch_listed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN watch_last_interaction TEXT;
"""

# A sink's pacing outlives the process (``poller once`` from cron): no post before
# ``not_before`` (Unix time), which was set at ``set_at``.
_V3_SINK_PACING = """
CREATE TABLE sink_pacing (
    sink TEXT PRIMARY KEY,
    not_before REAL NOT NULL,
    set_at REAL NOT NULL
) WITHOUT ROWID;
"""

# Each session's own fingerprint (session events): a row once the poller has seen the Session
# record; ``checked_at`` is when it was last read (a watch without the Sessions list fetches it).
_V4_SESSION_FINGERPRINTS = """
CREATE TABLE session_fingerprints (
    session_sid TEXT PRIMARY KEY REFERENCES sessions (session_sid) ON DELETE CASCADE,
    status TEXT,
    closed_reason TEXT,
    date_expiry TEXT,
    date_ended TEXT,
    checked_at REAL NOT NULL
) WITHOUT ROWID;
"""

# A sink the dispatcher stopped using (a webhook that is gone, refused SMTP credentials): its
# answer and since when, shown by ``poller outbox list``; the row goes once the sink takes an
# answer that does not disable it, or ``poller outbox retry`` resumes it.
_V5_DISABLED_SINKS = """
CREATE TABLE disabled_sinks (
    sink TEXT PRIMARY KEY,
    since REAL NOT NULL,
    last_at REAL NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL
) WITHOUT ROWID;
"""

# The history (``poller.state.history``): an event stays, done at ``done_at``, after its last
# row is acked with its attempts. ``seq`` is the original order (not the rowid, which VACUUM
# may renumber): an enqueue gives MAX(seq) + 1 in the order of the events; the events already
# there keep their rowid order. ``created_at`` is when the event was first enqueued (their
# oldest row's for the events already there). Each attempt goes with its event.
_V6_HISTORY = """
ALTER TABLE events ADD COLUMN type TEXT;
ALTER TABLE events ADD COLUMN created_at REAL;
ALTER TABLE events ADD COLUMN done_at REAL;
ALTER TABLE events ADD COLUMN seq INTEGER;
UPDATE events SET
    type = json_extract(body, '$.type'),
    created_at = COALESCE(
        (SELECT MIN(d.enqueued_at) FROM deliveries d WHERE d.event_id = events.id),
        CAST(strftime('%s', 'now') AS REAL)
    ),
    seq = rowid;
CREATE UNIQUE INDEX events_in_order ON events (seq);
CREATE INDEX events_by_age ON events (created_at);
CREATE INDEX events_by_session ON events (session_sid, seq);
CREATE INDEX events_done ON events (done_at) WHERE done_at IS NOT NULL;

CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    session_sid TEXT NOT NULL,
    at REAL NOT NULL,
    latency REAL NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dead', 'disabled')),
    status INTEGER,
    error TEXT
);
CREATE INDEX attempts_by_sink ON attempts (sink, id);
CREATE INDEX attempts_by_event ON attempts (event_id, sink);
"""

# Append only: MIGRATIONS[n] takes a file from version n to version n + 1.
MIGRATIONS: Sequence[str] = (
    _V1,
    _V2,
    _V3_SINK_PACING,
    _V4_SESSION_FINGERPRINTS,
    _V5_DISABLED_SINKS,
    _V6_HISTORY,
)


def latest_version(migrations: Sequence[str] = MIGRATIONS) -> int:
    return len(migrations)


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Apply every migration the file lacks, one transaction each; return the final version."""
    version = user_version(conn)
    for target, script in enumerate(migrations[version:], start=version + 1):
        try:
            # executescript() takes the statements as they are: BEGIN ... COMMIT makes one
            # transaction of the schema change and the version bump.
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\n"
                f"PRAGMA application_id = {APPLICATION_ID};\n"
                f"PRAGMA user_version = {target};\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return user_version(conn)


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def application_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA application_id").fetchone()
    return int(row[0])


def table_names(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    ).fetchall()
    return [str(name) for (name,) in rows]
