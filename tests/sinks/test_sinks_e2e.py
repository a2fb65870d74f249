"""End to end: `poller once` against the seeded simulator; 300 events to Teams, Discord, email."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fake_discord import FakeDiscord
from tests.fake_server import in_thread
from tests.fake_teams import MAX_BYTES, FakeTeams
from tests.smtp_server import PASSWORD, USER, smtp_server
from tests.support import run_poller, seeded_simulator, write_config

pytestmark = pytest.mark.slow

HOSTILE = "@everyone <!channel> <script>alert(1)</script> [click](http://evil.example)"


def test_a_burst_of_300_reaches_every_new_sink_as_one_digest_and_stays_inert(
    tmp_path: Path,
) -> None:
    with (
        seeded_simulator(15, sessions=10, per_session=30, body=HOSTILE) as sim,
        in_thread(FakeTeams()) as teams,
        in_thread(FakeDiscord()) as discord,
        smtp_server() as smtp,
    ):
        sinks: list[dict[str, Any]] = [
            {"name": "teams", "type": "teams", "webhook_url": teams.webhook_url},
            {"name": "discord", "type": "discord", "webhook_url": discord.webhook_url},
            {
                "name": "mail",
                "type": "email",
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp.port,
                "security": "none",
                "username": USER,
                "password": PASSWORD,
                "from": "poller@example.test",
                "to": ["oncall@example.test"],
            },
        ]
        config = write_config(
            tmp_path, sim, "http://127.0.0.1:9", sinks=sinks, poll={"first_run": "notify_all"}
        )
        result = run_poller("once", "-c", str(config), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert teams.rejected == discord.rejected == []
    (card,) = teams.accepted
    assert len(card.raw) <= MAX_BYTES
    assert card.payload["attachments"][0]["content"]["body"][0]["text"] == (
        "300 events in 10 sessions"
    )
    (message,) = discord.messages()
    assert message["embeds"][0]["title"] == "300 events in 10 sessions"
    assert message["allowed_mentions"] == {"parse": []}
    (mail,) = smtp.mailbox.messages
    html = mail.get_body(preferencelist=("html",))
    assert html is not None
    page = html.get_content()
    assert page.count("&lt;script&gt;") == 300
    assert "<script>" not in page
    # Teams pings only through mention entities, which the sink never sends; Discord parses
    # none (allowed_mentions) and sees no bare @everyone either.
    teams_raw, discord_raw = card.raw.decode(), json.dumps(message, ensure_ascii=False)
    for live in ("<script>", "<!channel>", "[click](http", "msteams", "<at>"):
        assert live not in teams_raw
    for live in ("<script>", "<!channel>", "[click](http", "@everyone"):
        assert live not in discord_raw
