"""`poller test-sink NAME` with the Teams, Discord and email sinks: the real CLI, real servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fake_discord import WEBHOOK_PATH as DISCORD_PATH
from tests.fake_discord import FakeDiscord
from tests.fake_server import in_thread
from tests.fake_teams import WORKFLOW, FakeTeams
from tests.smtp_server import PASSWORD, USER, Running, smtp_server
from tests.support import run_poller

pytestmark = pytest.mark.slow


@pytest.fixture
def teams() -> Iterator[FakeTeams]:
    with in_thread(FakeTeams()) as fake:
        yield fake


@pytest.fixture
def discord() -> Iterator[FakeDiscord]:
    with in_thread(FakeDiscord()) as fake:
        yield fake


@pytest.fixture
def smtp() -> Iterator[Running]:
    with smtp_server() as running:
        yield running


def _config(folder: Path, sink: dict[str, Any]) -> str:
    """A config whose Twilio is a closed port: test-sink must not need it."""
    config = {
        "twilio": {
            "account_sid": "AC" + "0" * 32,
            "auth_token": "twilio-token-never-used",
            "base_url": "http://127.0.0.1:9",
        },
        "state": {"path": str(folder / "state.db")},
        "watch": [{"service_sid": "KS" + "0" * 32, "all_sessions": True}],
        "sinks": [sink],
        "log": {"format": "json", "level": "info"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_teams_gets_one_card_and_exits_0(teams: FakeTeams, tmp_path: Path) -> None:
    sink = {"name": "teams", "type": "teams", "webhook_url": teams.webhook_url}
    result = run_poller("test-sink", "teams", "-c", _config(tmp_path, sink))
    assert result.returncode == 0, result.stderr
    assert teams.rejected == []
    (card,) = teams.cards()
    assert card["body"][0]["text"] == "New message"
    assert "driver is 2 minutes away" in json.dumps(card)
    assert WORKFLOW not in result.stdout + result.stderr


def test_discord_gets_one_embed_and_exits_0(discord: FakeDiscord, tmp_path: Path) -> None:
    sink = {"name": "discord", "type": "discord", "webhook_url": discord.webhook_url}
    result = run_poller("test-sink", "discord", "-c", _config(tmp_path, sink))
    assert result.returncode == 0, result.stderr
    (message,) = discord.messages()
    assert message["allowed_mentions"] == {"parse": []}
    assert message["embeds"][0]["title"] == "New message"
    assert DISCORD_PATH.rsplit("/", 1)[1] not in result.stdout + result.stderr


def test_a_deleted_discord_webhook_exits_1_naming_the_reason(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    url = discord.base_url + "/api/webhooks/1/deleted-webhook-token"
    sink = {"name": "discord", "type": "discord", "webhook_url": url}
    result = run_poller("test-sink", "discord", "-c", _config(tmp_path, sink))
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("sink discord:")]
    assert "HTTP 404 code 10015" in line
    assert "the webhook was deleted" in line
    assert "deleted-webhook-token" not in result.stderr


def test_email_arrives_at_the_smtp_server_and_exits_0(smtp: Running, tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD)
    sink = {
        "name": "mail",
        "type": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "security": "none",
        "username": USER,
        "password_file": str(secret),
        "from": "poller@example.test",
        "to": "oncall@example.test",
    }
    result = run_poller("test-sink", "mail", "-c", _config(tmp_path, sink))
    assert result.returncode == 0, result.stderr
    (message,) = smtp.mailbox.messages
    assert message["Subject"] == "[twilio-proxy-poller] New message"
    assert PASSWORD not in result.stdout + result.stderr


def test_refused_smtp_credentials_exit_1_with_the_reply_code(smtp: Running, tmp_path: Path) -> None:
    sink = {
        "name": "mail",
        "type": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "security": "none",
        "username": USER,
        "password": "wrong-password-xyz",
        "from": "poller@example.test",
        "to": ["oncall@example.test"],
    }
    result = run_poller("test-sink", "mail", "-c", _config(tmp_path, sink))
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("sink mail:")]
    assert "SMTP 535" in line
    assert "username or password" in line
    assert "wrong-password-xyz" not in result.stderr
    assert smtp.mailbox.messages == []
