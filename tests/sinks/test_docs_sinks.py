"""docs/sinks.md shows exactly what each new sink sends; the renderer takes any event type."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from poller.events import EventType
from poller.sinks.discord import event_embed, message
from poller.sinks.email_message import DEFAULT_SUBJECT, build_message, compile_subject
from poller.sinks.render import Summary, facts_of, humanise, summarize
from poller.sinks.samples import sample_event
from poller.sinks.teams import event_card

DOC = Path(__file__).resolve().parents[2] / "docs" / "sinks.md"
MOMENT = datetime(2026, 11, 27, 10, 0, 5, tzinfo=UTC)


def documented(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)\n```", DOC.read_text(), re.S)
    assert match, f"docs/sinks.md has no {name} example"
    return match.group(1)


@pytest.fixture
def summary() -> Summary:
    return summarize(sample_event(MOMENT, EventType.UPDATED), include_data=True)


def test_the_teams_example_is_what_the_sink_sends(summary: Summary) -> None:
    assert json.loads(documented("teams")) == event_card(summary)


def test_the_discord_example_is_what_the_sink_sends(summary: Summary) -> None:
    assert json.loads(documented("discord")) == message([event_embed(summary)])


def test_the_email_example_is_what_the_sink_sends() -> None:
    built, _ = build_message(
        [sample_event(MOMENT, EventType.UPDATED)],
        subject=compile_subject(DEFAULT_SUBJECT),
        sender="poller@example.com",
        recipients=["oncall@example.com"],
        include_data=True,
    )
    text = built.get_body(preferencelist=("plain",))
    assert text is not None
    assert text.get_content().rstrip("\n") == documented("email")
    assert f"the subject `{built['Subject']}`" in DOC.read_text()


def test_any_event_data_renders_as_a_title_and_facts() -> None:
    # The shape of a session.updated event's data: the renderer needs nothing interaction-only.
    data = {
        "service_sid": "KS" + "a" * 32,
        "session_sid": "KC" + "a" * 32,
        "session": {"sid": "KC" + "a" * 32, "status": "closed", "unique_name": "order-7"},
        "changes": {"status": ["open", "closed"]},
    }
    assert humanise("session.updated") == "Session updated"
    assert facts_of(data) == [
        ("Status", "open → closed"),
        ("Service", "KS" + "a" * 32),
        ("Session", "KC" + "a" * 32),
        ("Unique name", "order-7"),
    ]
