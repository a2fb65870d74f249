"""What the email sink sends: a plain-text body, an HTML alternative and a sandboxed subject.

Every value from Twilio is HTML-escaped in the HTML part (a body holding ``<script>`` shows
those characters) and appears as it is in the plain-text part; the subject is rendered by the
sink's ``subject_template`` and folded onto one line, so no value can add a header.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import jinja2

from poller.events import Event
from poller.sinks.render import DigestSummary, Summary, summarize, summarize_digest
from poller.sinks.templating import compile_sandboxed

DEFAULT_SUBJECT = "[twilio-proxy-poller] {{ title }}"
MAX_SUBJECT = 200
# A digest lists this many events; the rest are counted.
DIGEST_LINES = 500


def compile_subject(source: str) -> jinja2.Template:
    """Compile a subject template in the sandbox (raises ``jinja2.TemplateSyntaxError``)."""
    return compile_sandboxed(source)


def subject_context(events: Sequence[Event], title: str, *, include_data: bool) -> dict[str, Any]:
    """What a subject template sees: ``title``, ``count``, ``digest`` and ``event`` (the first)."""
    return {
        "title": title,
        "count": len(events),
        "digest": len(events) > 1,
        "event": events[0].payload(include_data=include_data) if events else {},
        "event_id": events[0].id if events else "",
    }


def render_subject(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """Render the subject on one line of at most :data:`MAX_SUBJECT` characters."""
    line = " ".join(template.render(context).split())
    return line[:MAX_SUBJECT] or "twilio-proxy-poller"


def _text_event(summary: Summary) -> list[str]:
    lines = [summary.title, ""]
    if summary.body:
        lines += ["> " + line for line in summary.body.splitlines() or [""]] + [""]
    lines += [f"{label}: {value}" for label, value in summary.facts]
    lines += ["", f"{summary.timestamp} · {summary.event_id}"]
    return lines


def _html_event(summary: Summary) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><th align='left'>{esc(label)}</th><td>{esc(value)}</td></tr>"
        for label, value in summary.facts
    )
    quote = f"<blockquote>{esc(summary.body)}</blockquote>" if summary.body else ""
    foot = f"<p><small>{esc(summary.timestamp)} · {esc(summary.event_id)}</small></p>"
    return f"<h2>{esc(summary.title)}</h2>{quote}<table>{rows}</table>{foot}"


def _text_digest(digest: DigestSummary) -> list[str]:
    lines = [digest.title, ""]
    lines += [f"{title}: {n}" for title, n in digest.counts] + [""]
    for summary in digest.newest[:DIGEST_LINES]:
        line = f"- {summary.timestamp} {summary.title} ({summary.session_sid})"
        lines.append(line + (f": {' '.join(summary.body.split())}" if summary.body else ""))
    if len(digest.newest) > DIGEST_LINES:
        lines.append(f"… and {len(digest.newest) - DIGEST_LINES} more")
    return lines


def _html_digest(digest: DigestSummary) -> str:
    esc = html.escape
    counts = "".join(f"<li>{esc(title)}: {n}</li>" for title, n in digest.counts)
    rows = "".join(
        f"<tr><td>{esc(s.timestamp)}</td><td>{esc(s.title)}</td><td>{esc(s.session_sid)}</td>"
        f"<td>{esc(s.body or '')}</td></tr>"
        for s in digest.newest[:DIGEST_LINES]
    )
    more = len(digest.newest) - DIGEST_LINES
    tail = f"<p>… and {more} more</p>" if more > 0 else ""
    return f"<h2>{esc(digest.title)}</h2><ul>{counts}</ul><table>{rows}</table>{tail}"


def _html_page(inner: str) -> str:
    return f"<!DOCTYPE html><html><body>{inner}</body></html>"


def build_message(
    events: Sequence[Event],
    *,
    subject: jinja2.Template,
    sender: str,
    recipients: Sequence[str],
    include_data: bool,
) -> tuple[EmailMessage, bool]:
    """Return the message for one event or a digest of several, and whether the subject fell back.

    A subject template that fails at run time (a key this event lacks) gives the default
    subject instead: the message still goes out.
    """
    if len(events) == 1:
        summary = summarize(events[0], include_data=include_data)
        title, text, page = summary.title, _text_event(summary), _html_event(summary)
    else:
        digest = summarize_digest(events, include_data=include_data)
        title, text, page = digest.title, _text_digest(digest), _html_digest(digest)
    context = subject_context(events, title, include_data=include_data)
    fell_back = False
    try:
        line = render_subject(subject, context)
    except Exception:  # a user's template may raise anything: fall back
        line, fell_back = render_subject(compile_subject(DEFAULT_SUBJECT), context), True
    message = EmailMessage()
    message["Subject"] = line
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content("\n".join(text) + "\n")
    message.add_alternative(_html_page(page), subtype="html")
    return message, fell_back
