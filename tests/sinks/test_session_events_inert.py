"""A session's own text (its unique name, a closed reason) is as inert as a message body.

Twilio returns ``unique_name`` and ``closed_reason`` as whoever created the session set them;
every sink that renders session events must show them without pinging, linking or markup.
"""

from __future__ import annotations

import dataclasses
import json

from poller.events import Event
from poller.sinks.discord import event_embed
from poller.sinks.email_message import DEFAULT_SUBJECT, build_message, compile_subject
from poller.sinks.render import summarize
from poller.sinks.samples import sample_events
from poller.sinks.slack_blocks import event_message
from poller.sinks.teams import escape as teams_escape
from poller.sinks.teams import event_card
from tests.sink_bursts import HOSTILE


def _hostile_close() -> Event:
    (closed,) = sample_events(["session.updated"])
    assert closed.session is not None and closed.changes is not None
    session = {**closed.session, "unique_name": HOSTILE, "closed_reason": HOSTILE}
    changes = {**closed.changes, "closed_reason": (None, HOSTILE)}
    return dataclasses.replace(closed, session=session, changes=changes)


def test_hostile_session_text_is_inert_in_slack_teams_discord_and_email() -> None:
    event = _hostile_close()
    summary = summarize(event, include_data=True)
    assert ("Unique name", HOSTILE) in summary.facts  # it is there, shown, not dropped
    slack = json.dumps(event_message(event, include_data=True), ensure_ascii=False)
    card = json.dumps(event_card(summary), ensure_ascii=False)
    embed = json.dumps(event_embed(summary), ensure_ascii=False)
    mail, _ = build_message(
        [event],
        subject=compile_subject(DEFAULT_SUBJECT),
        sender="poller@example.com",
        recipients=["ops@example.com"],
        include_data=True,
    )
    html = mail.get_body(("html",))
    assert html is not None
    page = html.get_content()

    for live in ("<!channel>", "<@123456789>"):
        assert live not in slack
    for live in ("<script>", "<!channel>", "[click here](http", "**bold**", "<at>"):
        assert live not in card
    assert json.dumps(teams_escape(HOSTILE), ensure_ascii=False)[1:-1] in card
    for live in ("@everyone", "@here", "<@123456789>", "[click here](http", "**bold**"):
        assert live not in embed
    assert "<script>" not in page and "&lt;script&gt;" in page
