"""What the Slack sink says: Block Kit messages for events and digests, within Slack's limits.

Every value that comes from Twilio is escaped for mrkdwn (``&`` -> ``&amp;``, ``<`` -> ``&lt;``,
``>`` -> ``&gt;``, ``&`` first), so a message body holding ``<!channel>``, ``<@U123>`` or
``<https://evil|click>`` shows those characters instead of pinging or linking. Only text this
module writes itself (labels, quotes, ``<!date^...>`` time tokens) uses Slack's markup.

Limits kept (Slack rejects a message breaking any of them):

    at most 50 blocks                   section text <= 3000 characters
    at most 10 fields per section       each field <= 2000 characters
    header: plain_text, <= 150 chars    context: at most 10 elements

Lengths are counted in UTF-16 code units, which is never less than Slack's character count.
Long text is cut with a marker ``… (truncated, N more characters)``; nothing is ever empty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from typing import Any

from poller.events import Event, EventType
from poller.sinks.session_text import SESSION_DATES, SESSION_FIELDS, SESSION_LABELS, session_title
from poller.twilio.records import parse_time

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
# Our own cap on the notification fallback: Slack allows 40,000, nobody reads that many.
MAX_FALLBACK_TEXT = 3000

DIGEST_NEWEST = 5
_DIGEST_SESSIONS = 10
_EXCERPT = 120
_VALUE = 200  # a status, SID or time from Twilio is cut at this length
_NOTHING = "—"

Message = dict[str, Any]

_LABELS = {
    "date_updated": "Updated",
    "inbound_resource_status": "Inbound status",
    "outbound_resource_status": "Outbound status",
}
_KINDS = {"message": "Message", "voice": "Call"}
# Statuses worth a header of their own: the message or call did not get through.
_PROBLEMS = frozenset({"failed", "undelivered", "busy", "no-answer", "canceled"})


def escape(value: object) -> str:
    """Return ``value`` as text that Slack shows literally in mrkdwn."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_length(text: str) -> int:
    """Return the length of ``text`` in UTF-16 code units (an upper bound of Slack's count)."""
    return len(text.encode("utf-16-le")) // 2


def truncation_marker(dropped: int) -> str:
    return f"… (truncated, {dropped} more characters)"


def verbatim(text: str) -> str:
    """Render text that is already mrkdwn as it is (for :func:`fit`)."""
    return text


def ellipsis(dropped: int) -> str:
    """The short marker of excerpts (notification text, digest lines)."""
    return "…"


def fit(
    raw: str,
    limit: int,
    render: Callable[[str], str] = escape,
    marker: Callable[[int], str] = truncation_marker,
) -> str:
    """Return ``render(raw)``, cut with ``marker(dropped)`` so that it is at most ``limit`` long.

    ``render`` must not shrink when given a longer prefix (escaping and quoting never do).
    """
    full = render(raw)
    if slack_length(full) <= limit:
        return full
    low, high = 0, len(raw)
    while low < high:
        middle = (low + high + 1) // 2
        candidate = render(raw[:middle]) + marker(len(raw) - middle)
        if slack_length(candidate) <= limit:
            low = middle
        else:
            high = middle - 1
    return render(raw[:low]) + marker(len(raw) - low)


def quote(raw: str) -> str:
    """Return ``raw`` escaped and set as a mrkdwn block quote (every line starts with ``>``)."""
    return "\n".join("> " + line for line in escape(raw).split("\n"))


def header_block(text: str) -> dict[str, Any]:
    clipped = fit(text, MAX_HEADER_TEXT, verbatim)
    return {"type": "header", "text": {"type": "plain_text", "text": clipped, "emoji": True}}


def section_block(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}


def fields_block(fields: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": text} for text in fields[:MAX_FIELDS]],
    }


def context_block(texts: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": text} for text in texts[:MAX_CONTEXT_ELEMENTS]],
    }


def labelled(label: str, raw: str, limit: int, render: Callable[[str], str] = escape) -> str:
    """Return ``*label*`` and, on the next line, ``raw`` rendered and fitted within ``limit``."""
    head = f"*{label}*\n"
    return head + fit(raw, limit - slack_length(head), render)


def title(event: Event) -> str:
    """Return the headline of an event: "New message", "Call busy", "Message status changed"."""
    if event.is_session_event:
        return session_title(event)
    kind = _KINDS.get(str(event.interaction.get("type")), "Interaction")
    if event.type is EventType.CREATED:
        return f"New {kind.lower()}"
    interaction = event.interaction
    for key in ("outbound_resource_status", "inbound_resource_status"):
        status = interaction.get(key)
        if status in _PROBLEMS:
            return f"{kind} {status}"
    return f"{kind} status changed"


def sid(value: object) -> str:
    """Return a SID for mrkdwn: in code style when it looks like one, escaped always."""
    if not isinstance(value, str) or not value:
        return _NOTHING
    if value.replace("_", "").isalnum() and len(value) <= 64:
        return f"`{value}`"
    return fit(value, _VALUE)


def when(timestamp: object) -> str:
    """Return a time that Slack shows in each reader's own time zone, with a UTC fallback."""
    parsed = parse_time(timestamp)
    if parsed is None:
        return fit(timestamp, _VALUE) if isinstance(timestamp, str) and timestamp else _NOTHING
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        seconds = int(parsed.timestamp())
        fallback = parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):  # an instant outside what datetime can hold
        return fit(str(timestamp), _VALUE)
    return f"<!date^{seconds}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def duration(value: str) -> str:
    """Return seconds as "1 h 2 min 3 s"; anything else escaped as it is."""
    try:
        seconds = int(float(value))
    except (ValueError, OverflowError):
        return escape(value)
    if seconds < 0:
        return escape(value)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if hours or minutes:
        parts.append(f"{minutes} min")
    parts.append(f"{secs} s")
    return " ".join(parts)


def _status(value: object) -> str:
    return fit(value, _VALUE) if isinstance(value, str) and value else _NOTHING


def _session_fields(event: Event) -> list[str]:
    record = event.session or {}
    values = [("Session", sid(event.session_sid))]
    for key, label in SESSION_FIELDS:
        raw = record.get(key)
        values.append((label, when(raw) if key in SESSION_DATES and raw else _status(raw)))
    values.append(("Time", when(event.timestamp)))
    return [fit(f"*{label}*\n{text}", MAX_FIELD_TEXT, verbatim) for label, text in values]


def _fields(event: Event) -> list[str]:
    if event.is_session_event:
        return _session_fields(event)
    it = event.interaction
    inbound, outbound = it.get("inbound_participant_sid"), it.get("outbound_participant_sid")
    values = [
        ("Session", sid(event.session_sid)),
        ("Type", _status(it.get("type"))),
        ("Direction", f"{sid(inbound)} → {sid(outbound)}"),
        ("Inbound status", _status(it.get("inbound_resource_status"))),
        ("Outbound status", _status(it.get("outbound_resource_status"))),
        ("Time", when(event.timestamp)),
    ]
    return [fit(f"*{label}*\n{text}", MAX_FIELD_TEXT, verbatim) for label, text in values]


def _changes(changes: Mapping[str, tuple[str | None, str | None]]) -> str:
    lines = []
    for key, (old, new) in changes.items():
        label = _LABELS.get(key) or SESSION_LABELS.get(key) or escape(key)
        if key == "date_updated" or key in SESSION_DATES:
            lines.append(f"• {label}: {when(old)} → {when(new)}")
        else:
            lines.append(f"• {label}: {_status(old)} → {_status(new)}")
    return fit_lines("Changes", lines, MAX_SECTION_TEXT)


def fit_lines(label: str, lines: Sequence[str], limit: int, *, hidden: int = 0) -> str:
    """Return ``*label*`` and as many whole lines as fit, then "_and N more_" for the rest
    (``hidden`` counts items that were never offered as lines)."""
    text = f"*{label}*"
    shown = 0
    for line in lines:
        left = len(lines) - shown - 1 + hidden
        if slack_length(text + "\n" + line + _and_more(left)) > limit:
            break
        text += "\n" + line
        shown += 1
    return text + _and_more(len(lines) - shown + hidden)


def _and_more(count: int) -> str:
    return f"\n_and {count} more_" if count else ""


def context(event: Event) -> dict[str, Any]:
    parts = [
        f"Service {sid(event.service_sid)}",
        f"Session {sid(event.session_sid)}",
        f"Interaction {sid(event.interaction_sid)}",
        f"Event {sid(event.id)}",
    ]
    if event.is_session_event:
        del parts[2]  # a session event is about no interaction
    return context_block([fit(" · ".join(parts), MAX_SECTION_TEXT, verbatim)])


def content_block(event: Event) -> dict[str, Any] | None:
    """Return the section with the message body (messages) or the duration (calls)."""
    body = event.message_text()
    if body is not None:
        if not body:
            return section_block("*Message*\n_(empty)_")
        return section_block(labelled("Message", body, MAX_SECTION_TEXT, quote))
    seconds = event.call_duration()
    if seconds is not None:
        return section_block("*Duration*\n" + fit(seconds, MAX_FIELD_TEXT, duration))
    return None


def fallback(event: Event, *, include_data: bool) -> str:
    """Return the plain ``text`` of an event message (notifications, screen readers)."""
    where = ": " if event.is_session_event else " in session "
    text = f"{title(event)}{where}{escape(event.session_sid)}"
    body = event.message_text() if include_data else None
    if body:
        text += ": " + fit(body.replace("\n", " "), _EXCERPT, marker=ellipsis)
    return fit(text, MAX_FALLBACK_TEXT, verbatim)


def event_message(event: Event, *, include_data: bool) -> Message:
    """Return the default Block Kit message of one event."""
    blocks = [header_block(title(event)), fields_block(_fields(event))]
    if include_data and (content := content_block(event)) is not None:
        blocks.append(content)
    if event.changes:
        blocks.append(section_block(_changes(event.changes)))
    blocks.append(context(event))
    return {"text": fallback(event, include_data=include_data), "blocks": blocks}


def _newest_line(event: Event, *, include_data: bool) -> str:
    line = f"• {when(event.timestamp)} {escape(title(event))} in {sid(event.session_sid)}"
    body = event.message_text() if include_data else None
    if body:
        line += ": " + fit(body.replace("\n", " "), _EXCERPT, marker=ellipsis)
    return line


def digest_message(events: Sequence[Event], *, include_data: bool) -> Message:
    """Return ONE summary of many events: counts by session and type, the newest few."""
    sessions = Counter(event.session_sid for event in events)
    kinds = Counter(title(event) for event in events)
    newest = sorted(events, key=lambda event: (event.timestamp, event.sort_key), reverse=True)
    by_session = [
        f"• {sid(session)}: {count}"
        for session, count in sorted(sessions.items(), key=lambda item: (-item[1], item[0]))
    ]
    by_kind = [f"• {escape(kind)}: {count}" for kind, count in kinds.most_common()]
    shown = [_newest_line(event, include_data=include_data) for event in newest[:DIGEST_NEWEST]]
    newest_text = fit_lines("Newest", shown, MAX_SECTION_TEXT, hidden=len(events) - len(shown))
    services = sorted({event.service_sid for event in events})
    plural = "" if len(events) == 1 else "s"
    headline = f"{len(events)} Proxy event{plural} in {len(sessions)} session"
    headline += "" if len(sessions) == 1 else "s"
    blocks = [
        header_block(headline),
        section_block(
            fit_lines(
                "By session",
                by_session[:_DIGEST_SESSIONS],
                MAX_SECTION_TEXT,
                hidden=max(0, len(by_session) - _DIGEST_SESSIONS),
            )
        ),
        section_block(fit_lines("By type", by_kind, MAX_SECTION_TEXT)),
        section_block(newest_text),
        context_block(
            [fit("Service " + ", ".join(sid(s) for s in services), MAX_SECTION_TEXT, verbatim)]
        ),
    ]
    return {"text": headline, "blocks": blocks}
