"""Teams and Discord sinks against fakes on 127.0.0.1 that enforce each service's limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from poller.config import DiscordSinkConfig, TeamsSinkConfig
from poller.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.sinks import Sink
from poller.sinks.discord import DiscordSink, event_embed
from poller.sinks.discord import escape as discord_escape
from poller.sinks.discord import message as discord_message
from poller.sinks.render import Summary
from poller.sinks.teams import TeamsSink
from poller.sinks.teams import escape as teams_escape
from tests.fake_discord import FakeDiscord, discord_headers, rate_limited_body
from tests.fake_teams import MAX_BYTES, FakeTeams
from tests.sink_bursts import HOSTILE, answers, burst, deliver
from tests.sink_contract_cases import make_event


class Sleeps:
    """A real ``asyncio.sleep`` that remembers how long each sink pause was."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(seconds)


@pytest.fixture
async def teams() -> AsyncIterator[FakeTeams]:
    async with FakeTeams() as fake:
        yield fake


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


def teams_sink(url: str, sleep: Sleeps | None = None, **extra: Any) -> TeamsSink:
    config = TeamsSinkConfig.model_validate(
        {"name": "teams", "type": "teams", "webhook_url": url, **extra}
    )
    return TeamsSink(config, sleep=sleep or Sleeps())


def discord_sink(url: str, sleep: Sleeps | None = None, **extra: Any) -> DiscordSink:
    config = DiscordSinkConfig.model_validate(
        {"name": "discord", "type": "discord", "webhook_url": url, **extra}
    )
    return DiscordSink(config, sleep=sleep or Sleeps())


# -- a burst of 300 ------------------------------------------------------------------------


async def test_a_burst_of_300_reaches_teams_as_one_digest_within_28_kb(
    teams: FakeTeams, tmp_path: Path
) -> None:
    sink = teams_sink(teams.webhook_url)
    result, store = await deliver(sink, burst(300), tmp_path)
    await sink.aclose()
    await store.close()
    assert result.sinks["teams"].delivered == 300
    assert teams.rejected == []
    (received,) = teams.accepted
    assert len(received.raw) <= MAX_BYTES
    texts = [b.get("text", "") for b in teams.cards()[0]["body"]]
    assert texts[0] == "300 events in 12 sessions"
    assert texts[-1].startswith("… and ")  # the newest shown, the rest counted


async def test_a_burst_of_300_reaches_discord_as_one_digest_within_its_limits(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    sink = discord_sink(discord.webhook_url)
    result, store = await deliver(sink, burst(300, body="b" * 1500), tmp_path)
    await sink.aclose()
    await store.close()
    assert result.sinks["discord"].delivered == 300
    assert discord.rejected == []
    (message,) = discord.messages()
    (embed,) = message["embeds"]
    assert embed["title"] == "300 events in 12 sessions"
    assert embed["fields"] == [{"name": "New message", "value": "300", "inline": True}]
    assert message["allowed_mentions"] == {"parse": []}


async def test_an_event_at_every_limit_still_fits(teams: FakeTeams, discord: FakeDiscord) -> None:
    event = make_event(body="x" * 100_000)
    for sink in (teams_sink(teams.webhook_url), discord_sink(discord.webhook_url)):
        await sink.send(event)
        await sink.aclose()
    assert teams.rejected == discord.rejected == []
    assert len(teams.accepted) == len(discord.accepted) == 1
    assert "characters, cut" in discord.messages()[0]["embeds"][0]["description"]


# -- hostile bodies ------------------------------------------------------------------------


async def test_a_hostile_body_is_inert_in_teams(teams: FakeTeams) -> None:
    sink = teams_sink(teams.webhook_url)
    await sink.send(make_event(body=HOSTILE))
    await sink.send_digest([make_event(body=HOSTILE) for _ in range(6)])
    await sink.aclose()
    assert len(teams.accepted) == 2
    for received in teams.accepted:
        raw = received.raw.decode()
        for live in ("<script>", "<!channel>", "<@123456789>", "[click here](http", "msteams"):
            assert live not in raw
    body_text = teams.cards()[0]["body"][1]["text"]
    assert body_text == teams_escape(HOSTILE)
    assert "&lt;script\\>alert\\(1\\)&lt;/script\\>" in body_text


async def test_a_hostile_body_is_inert_in_discord(discord: FakeDiscord) -> None:
    sink = discord_sink(discord.webhook_url)
    await sink.send(make_event(body=HOSTILE))
    await sink.send_digest([make_event(body=HOSTILE) for _ in range(6)])
    await sink.aclose()
    assert len(discord.accepted) == 2
    for message in discord.messages():
        assert message["allowed_mentions"] == {"parse": []}
        assert "content" not in message
        raw = json.dumps(message, ensure_ascii=False)
        for live in ("@everyone", "@here", "<@123456789>", "[click here](http", "**bold**"):
            assert live not in raw
    description = discord.messages()[0]["embeds"][0]["description"]
    assert description == discord_escape(HOSTILE)
    assert "\\[click here\\]\\(http\\://evil.example\\)" in description


# -- throttling ----------------------------------------------------------------------------


async def test_teams_429_is_retried_after_its_retry_after(teams: FakeTeams) -> None:
    teams.limit = 1
    sleeps = Sleeps()
    sink = teams_sink(teams.webhook_url, sleeps)
    await sink.send(make_event())
    with pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert (info.value.status, info.value.retry_after) == (429, 1.0)
    teams.limit = 10
    await sink.send(make_event())  # waits out Teams' second before posting
    await sink.aclose()
    assert 0.5 <= max(sleeps.slept) <= 1.0  # the rest of Teams' second (less under load)
    assert [r.status for r in teams.received] == [202, 429, 202]


async def test_discord_429_is_retried_after_the_retry_after_of_its_body(
    discord: FakeDiscord,
) -> None:
    discord.fail(429, rate_limited_body(0.25), headers={"Retry-After": "1"})
    sleeps = Sleeps()
    sink = discord_sink(discord.webhook_url, sleeps)
    with pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert info.value.retry_after == pytest.approx(0.25)  # the body's float, not the header
    await sink.send(make_event())
    await sink.aclose()
    assert sleeps.slept
    assert 0.1 <= max(sleeps.slept) <= 0.25
    assert [r.status for r in discord.received] == [429, 200]


async def test_discord_rate_limit_headers_pace_posts_so_no_429_comes(
    discord: FakeDiscord,
) -> None:
    discord.limit, discord.window = 2, 0.4
    sleeps = Sleeps()
    sink = discord_sink(discord.webhook_url, sleeps)
    for _ in range(5):
        await sink.send(make_event())
    await sink.aclose()
    assert [r.status for r in discord.received] == [200] * 5
    assert len(sleeps.slept) >= 2  # it waited for X-RateLimit-Reset-After when Remaining was 0


async def test_discord_remaining_zero_on_an_answer_holds_the_next_post(
    discord: FakeDiscord,
) -> None:
    discord.fail(200, '{"id": "1"}', headers=discord_headers(0, 0.3))
    sleeps = Sleeps()
    sink = discord_sink(discord.webhook_url, sleeps)
    await sink.send(make_event())
    await sink.send(make_event())
    await sink.aclose()
    assert 0.1 <= max(sleeps.slept) <= 0.3


# -- every answer classified -----------------------------------------------------------------

TEAMS_ANSWERS = [
    (413, PermanentDeliveryError, "larger than Teams takes"),
    (400, PermanentDeliveryError, "could not read the card"),
    (401, SinkDisabledError, "signature"),
    (403, SinkDisabledError, "signature"),
    (404, SinkDisabledError, "no longer exists"),
    (410, SinkDisabledError, "Gone"),
    (429, RetryableDeliveryError, "throttles"),
    (500, RetryableDeliveryError, "server error"),
    (503, RetryableDeliveryError, "server error"),
    (302, RetryableDeliveryError, "redirect"),
    (418, PermanentDeliveryError, "refused"),
]

DISCORD_ANSWERS = [
    (400, '{"message": "Invalid Form Body", "code": 50035}', PermanentDeliveryError, "refused"),
    (401, '{"message": "Invalid Webhook Token", "code": 50027}', SinkDisabledError, "token"),
    (403, '{"message": "Missing Permissions", "code": 50013}', PermanentDeliveryError, "may not"),
    (404, '{"message": "Unknown Webhook", "code": 10015}', SinkDisabledError, "deleted"),
    (413, '{"message": "Request entity too large"}', PermanentDeliveryError, "larger"),
    (429, rate_limited_body(0.01), RetryableDeliveryError, "rate-limits"),
    (500, "", RetryableDeliveryError, "server error"),
    (502, "<html>bad gateway</html>", RetryableDeliveryError, "server error"),
]


@pytest.mark.parametrize(("status", "error", "reason"), TEAMS_ANSWERS)
async def test_every_teams_answer_is_classified_with_a_reason_and_a_metric(
    teams: FakeTeams, status: int, error: type[DeliveryError], reason: str
) -> None:
    teams.fail(status, json=False)
    outcome = {RetryableDeliveryError: "retry", PermanentDeliveryError: "permanent"}
    before = answers("teams", outcome.get(error, "disabled"), f"HTTP {status}")
    sink = teams_sink(teams.webhook_url)
    with pytest.raises(error, match=reason) as info:
        await sink.send(make_event())
    await sink.aclose()
    assert info.value.status == status
    assert answers("teams", outcome.get(error, "disabled"), f"HTTP {status}") == before + 1


@pytest.mark.parametrize(("status", "body", "error", "reason"), DISCORD_ANSWERS)
async def test_every_discord_answer_is_classified_with_a_reason_and_a_metric(
    discord: FakeDiscord, status: int, body: str, error: type[DeliveryError], reason: str
) -> None:
    discord.fail(status, body)
    outcome = {RetryableDeliveryError: "retry", PermanentDeliveryError: "permanent"}
    code = json.loads(body).get("code") if body.startswith("{") else None
    label = f"HTTP {status}" + (f" code {code}" if code else "")
    before = answers("discord", outcome.get(error, "disabled"), label)
    sink = discord_sink(discord.webhook_url)
    with pytest.raises(error, match=reason) as info:
        await sink.send(make_event())
    await sink.aclose()
    assert info.value.status == status
    assert answers("discord", outcome.get(error, "disabled"), label) == before + 1


async def test_timeouts_and_refused_connections_are_retried() -> None:
    async with FakeTeams() as gone:
        url = gone.webhook_url
    for sink in (teams_sink(url), discord_sink(url)):
        with pytest.raises(RetryableDeliveryError, match="transport failure"):
            await sink.send(make_event())
        await sink.aclose()


async def test_a_refused_card_is_dead_lettered_with_its_reason_for_outbox_list(
    teams: FakeTeams, discord: FakeDiscord, tmp_path: Path
) -> None:
    teams.fail(413, json=False)
    discord.fail(400, '{"message": "Invalid Form Body", "code": 50035}')
    sinks: list[Sink] = [teams_sink(teams.webhook_url), discord_sink(discord.webhook_url)]
    for n, sink in enumerate(sinks):
        folder = tmp_path / str(n)
        folder.mkdir()
        result, store = await deliver(sink, [make_event()], folder)
        (dead,) = await store.dead_letters(sink.name)
        await store.close()
        await sink.aclose()
        assert result.sinks[sink.name].dead == 1
        assert dead.last_status in (413, 400)
        assert dead.last_error is not None
        assert "dead-lettered" in dead.last_error
        assert "\n" not in dead.last_error


# -- the fakes are as strict as the services ---------------------------------------------------


async def test_the_fakes_refuse_what_the_services_refuse(
    teams: FakeTeams, discord: FakeDiscord
) -> None:
    too_long = {"embeds": [{"title": "t", "description": "d" * 4000}, {"description": "e" * 2001}]}
    too_many = {"embeds": [{"title": str(i)} for i in range(11)]}
    async with httpx.AsyncClient() as client:
        big = {"type": "message", "attachments": [], "pad": "x" * MAX_BYTES}
        assert (await client.post(teams.webhook_url, json=big)).status_code == 413
        assert (await client.post(teams.webhook_url, json={"type": "message"})).status_code == 400
        for payload in (too_long, too_many, {"content": "c" * 2001}):
            answer = await client.post(discord.webhook_url, json=payload)
            assert (answer.status_code, answer.json()["code"]) == (400, 50035)
        discord.limit = 1
        assert (await client.post(discord.webhook_url, json={"content": "a"})).status_code == 204
        limited = await client.post(discord.webhook_url, json={"content": "b"})
    assert limited.status_code == 429
    assert limited.json()["message"] == "You are being rate limited."
    assert limited.json()["retry_after"] > 0
    assert limited.headers["x-ratelimit-remaining"] == "0"


async def test_long_facts_are_dropped_before_discords_6000_characters_are_passed(
    discord: FakeDiscord,
) -> None:
    summary = Summary(
        title="Session updated",
        facts=tuple((f"field {i}", "v" * 2000) for i in range(30)),
        body="b" * 5000,
        timestamp="not a time",
        event_id="evt_" + "0" * 32,
        session_sid="KC" + "a" * 32,
    )
    embed = event_embed(summary)
    assert "timestamp" not in embed
    assert 0 < len(embed["fields"]) < 25
    async with httpx.AsyncClient() as client:
        answer = await client.post(discord.webhook_url, json=discord_message([embed]))
    assert answer.status_code == 204


def test_markdown_in_a_body_is_escaped_for_each_service() -> None:
    text = "1. first\n- item\n**b** [x](http://evil) <@1> & @everyone"
    assert teams_escape(text) == (
        "1\\. first\n\\- item\n\\*\\*b\\*\\* \\[x\\]\\(http://evil\\) &lt;@1\\> &amp; @everyone"
    )
    assert discord_escape(text) == (
        "1. first\n\\- item\n\\*\\*b\\*\\* \\[x\\]\\(http\\://evil\\) "
        "\\<@\u200b1\\> & @\u200beveryone"
    )
