"""Words for session events, shared by every sink: a headline and the session's facts.

Values are raw text from Twilio: each sink escapes them for its own markup.
"""

from __future__ import annotations

from poller.events import Event, EventType

# The session's own fields worth a line in a message, in the order they are shown.
SESSION_FIELDS: tuple[tuple[str, str], ...] = (
    ("unique_name", "Unique name"),
    ("status", "Status"),
    ("closed_reason", "Closed reason"),
    ("date_expiry", "Expires"),
    ("date_ended", "Ended"),
)
SESSION_LABELS = {key: label for key, label in SESSION_FIELDS}
SESSION_DATES = frozenset({"date_expiry", "date_ended"})


def session_title(event: Event) -> str:
    """Return the headline of a session event: "New session", "Session closed", ..."""
    if event.type is EventType.SESSION_CREATED:
        return "New session"
    changes = event.changes or {}
    status = changes.get("status")
    if status is not None and status[1]:
        return f"Session {status[1]}"
    if "date_expiry" in changes:
        return "Session expiry changed"
    return "Session updated"
