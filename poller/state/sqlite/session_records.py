"""The state's side of session events: each session's stored fingerprint (``session_diff``)."""

from __future__ import annotations

import sqlite3

from poller.state.models import StoredSession
from poller.twilio.records import SessionFingerprint


def read_fingerprint(conn: sqlite3.Connection, session_sid: str) -> StoredSession | None:
    row = conn.execute(
        "SELECT status, closed_reason, date_expiry, date_ended, checked_at "
        "FROM session_fingerprints WHERE session_sid = ?",
        (session_sid,),
    ).fetchone()
    if row is None:
        return None
    return StoredSession(SessionFingerprint._make(tuple(row)[:4]), float(row[4]))


def write_fingerprint(
    conn: sqlite3.Connection, session_sid: str, fingerprint: SessionFingerprint, now: float
) -> None:
    """Store the fingerprint read at ``now`` (the session's row must exist)."""
    conn.execute(
        "INSERT INTO session_fingerprints "
        "(session_sid, status, closed_reason, date_expiry, date_ended, checked_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_sid) DO UPDATE SET "
        "status = excluded.status, closed_reason = excluded.closed_reason, "
        "date_expiry = excluded.date_expiry, date_ended = excluded.date_ended, "
        "checked_at = excluded.checked_at",
        (session_sid, *fingerprint, now),
    )
