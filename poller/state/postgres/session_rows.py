"""The session side's rows in PostgreSQL: a poll's session row, known sets and session
fingerprints in bulk, and rows back into ``SessionState``.

A poll's commit is the hot path (thousands of sessions per cycle): the session row and its
fingerprint are one statement (:func:`success_sql`), which can carry the lease check too, and a
known set is written as arrays (``unnest``): one statement whatever its size. The parameters of
an ``INSERT ... SELECT`` are cast, so a None is never left for the server to guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from poller.errors import FencedError
from poller.state.models import SessionState, StoredSession
from poller.state.postgres.db import Cursor
from poller.state.postgres.fence import Fence
from poller.twilio.records import Fingerprint, SessionFingerprint

# In SessionState's field order, so a row is SessionState(*row).
SESSION_COLUMNS = (
    "service_sid, session_sid, baselined, new_traffic, last_success_at, consecutive_failures, "
    "last_error, activity_marker, status, unsettled_until, last_failure_at, gone_at, "
    "watch_listed, watch_last_interaction"
)
GONE_AT = 11  # where gone_at is in SESSION_COLUMNS
_SELECT_SESSIONS = f"SELECT {SESSION_COLUMNS} FROM sessions"  # noqa: S608 - constants only
SESSION_BY_SID = _SELECT_SESSIONS + " WHERE session_sid = %s"
ALL_SESSIONS = _SELECT_SESSIONS + ' ORDER BY session_sid COLLATE "C"'
SESSIONS_OF = _SELECT_SESSIONS + ' WHERE service_sid = %s ORDER BY session_sid COLLATE "C"'
# Tracks a session, or revives it (gone_at = NULL) if it is stored; returns it either way.
ENSURE_SQL = (
    "INSERT INTO sessions (service_sid, session_sid, new_traffic, added_at) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (session_sid) DO UPDATE SET gone_at = NULL "
    "RETURNING " + SESSION_COLUMNS
)

# The lease check of fence.check as a CTE, for a statement that carries its own check.
_LEASE = (
    "lease AS (SELECT 1 FROM leases WHERE service_sid = %(service)s AND owner = %(replica)s "
    "AND epoch = %(epoch)s AND expires_at > now() FOR SHARE)"
)

_SUCCESS = (
    "s AS (INSERT INTO sessions (service_sid, session_sid, baselined, last_success_at, added_at, "
    "activity_marker, status, unsettled_until) "
    "SELECT %(service)s::text, %(session)s::text, true, %(now)s::float8, %(now)s::float8, "
    "%(marker)s::text, %(status)s::text, %(unsettled)s::float8{guard} "
    "ON CONFLICT (session_sid) DO UPDATE SET baselined = true, consecutive_failures = 0, "
    "last_success_at = excluded.last_success_at, activity_marker = excluded.activity_marker, "
    "status = excluded.status, unsettled_until = excluded.unsettled_until "
    "RETURNING session_sid)"
)

_FINGERPRINT_UPDATE = (
    "ON CONFLICT (session_sid) DO UPDATE SET status = excluded.status, "
    "closed_reason = excluded.closed_reason, date_expiry = excluded.date_expiry, "
    "date_ended = excluded.date_ended, checked_at = excluded.checked_at"
)

# Written only when %(has_fp)s, from the session row s wrote (so it exists for the key).
_SUCCESS_FINGERPRINT = (
    "f AS (INSERT INTO session_fingerprints "  # noqa: S608 - constants only
    "(session_sid, status, closed_reason, date_expiry, date_ended, checked_at) "
    "SELECT s.session_sid, %(fp_status)s::text, %(fp_reason)s::text, %(fp_expiry)s::text, "
    "%(fp_ended)s::text, %(now)s::float8 FROM s WHERE %(has_fp)s::boolean "
    + _FINGERPRINT_UPDATE
    + ")"
)


def success_sql(*, fenced: bool) -> str:
    """One statement: a successful poll's session row (and fingerprint); returns its count.

    ``fenced``: the statement checks the lease itself (``%(replica)s``, ``%(epoch)s``) and
    writes nothing, returning 0, unless it holds; the lease row stays locked ``FOR SHARE``
    until the statement's transaction ends, as in ``fence.check``.
    """
    guard = " WHERE EXISTS (SELECT 1 FROM lease)" if fenced else ""
    parts = [_LEASE] if fenced else []
    parts += [_SUCCESS.format(guard=guard), _SUCCESS_FINGERPRINT]
    return "WITH " + ", ".join(parts) + " SELECT count(*) FROM s"  # noqa: S608 - constants only


SUCCESS_SQL = success_sql(fenced=False)
FENCED_SUCCESS_SQL = success_sql(fenced=True)


def success_params(
    service_sid: str,
    session_sid: str,
    now: float,
    activity_marker: str | None,
    status: str | None,
    unsettled_until: float | None,
    fingerprint: SessionFingerprint | None,
) -> dict[str, Any]:
    """The parameters of :func:`success_sql` but the lease's (``replica``, ``epoch``)."""
    fp = fingerprint or SessionFingerprint(None, None, None, None)
    return {
        "service": service_sid,
        "session": session_sid,
        "now": now,
        "marker": activity_marker,
        "status": status,
        "unsettled": unsettled_until,
        "has_fp": fingerprint is not None,
        "fp_status": fp.status,
        "fp_reason": fp.closed_reason,
        "fp_expiry": fp.date_expiry,
        "fp_ended": fp.date_ended,
    }


def fenced_error(fence: Fence, service_sid: str) -> FencedError:
    """What a refused write raises (the words of ``fence.check``)."""
    return FencedError(
        f"replica {fence.replica} no longer holds the lease of {service_sid}: "
        "the write was not made",
        service_sids=(service_sid,),
    )


def session_state(row: Sequence[Any]) -> SessionState:
    """A row of ``SESSION_COLUMNS`` as the state hands it out."""
    return SessionState(*row)


# ---- known sets ----------------------------------------------------------------------------

_KNOWN = (
    "INSERT INTO interactions (session_sid, sid, date_updated, inbound_status, outbound_status) "
    "SELECT %s::text, u.* FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS u "
    "ON CONFLICT (session_sid, sid) DO UPDATE SET date_updated = excluded.date_updated, "
    "inbound_status = excluded.inbound_status, outbound_status = excluded.outbound_status "
    "WHERE (interactions.date_updated, interactions.inbound_status, "
    "interactions.outbound_status) IS DISTINCT FROM "
    "(excluded.date_updated, excluded.inbound_status, excluded.outbound_status)"
)


KNOWN_SQL = (
    "SELECT sid, date_updated, inbound_status, outbound_status FROM interactions "
    "WHERE session_sid = %s"
)


def known_set(found: Iterable[Sequence[Any]]) -> dict[str, Fingerprint]:
    """Rows of ``KNOWN_SQL`` as the known set, by SID."""
    fingerprint = Fingerprint._make
    return {row[0]: fingerprint(row[1:]) for row in found}


async def write_known(
    cur: Cursor,
    session_sid: str,
    fetched: Mapping[str, Fingerprint],
    known: Mapping[str, Fingerprint] | None,
) -> None:
    """Add ``fetched`` to the known set in one statement; nothing is deleted.

    ``known``: the stored set, so only the rows that differ are sent; None sends every row and
    the statement skips those that are the same. One listing lacking a known interaction (a
    short page, a paging anomaly) says nothing about it.
    """
    rows = [
        (sid, fp)
        for sid, fp in fetched.items()
        if known is None or tuple(known.get(sid, ())) != tuple(fp)
    ]
    if not rows:
        return
    await cur.execute(
        _KNOWN,
        (
            session_sid,
            [sid for sid, _ in rows],
            [fp.date_updated for _, fp in rows],
            [fp.inbound_resource_status for _, fp in rows],
            [fp.outbound_resource_status for _, fp in rows],
        ),
    )


# ---- session fingerprints ------------------------------------------------------------------


FINGERPRINT_SQL = (
    "SELECT status, closed_reason, date_expiry, date_ended, checked_at "
    "FROM session_fingerprints WHERE session_sid = %s"
)


def stored_session(found: Sequence[Sequence[Any]]) -> StoredSession | None:
    """The row of ``FINGERPRINT_SQL``, if any, as the state hands it out."""
    if not found:
        return None
    row = found[0]
    return StoredSession(SessionFingerprint._make(row[:4]), float(row[4]))


_FINGERPRINTS = (
    "INSERT INTO session_fingerprints "  # noqa: S608 - constants only
    "(session_sid, status, closed_reason, date_expiry, date_ended, checked_at) "
    "SELECT u.*, %s::float8 FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::text[]) AS u " + _FINGERPRINT_UPDATE
)


async def write_fingerprints(
    cur: Cursor, fingerprints: Iterable[tuple[str, SessionFingerprint]], now: float
) -> None:
    """Store each session's fingerprint read at ``now`` (every session's row must exist)."""
    rows = list(fingerprints)
    if not rows:
        return
    sids = [sid for sid, _ in rows]
    fields = [list(values) for values in zip(*(fp for _, fp in rows), strict=True)]
    await cur.execute(_FINGERPRINTS, (now, sids, *fields))
