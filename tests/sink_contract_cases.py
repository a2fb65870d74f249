"""The sinks the contract suite (tests/sinks/test_sink_contract.py) runs against, and event helpers.

To put a sink type under the contract, write one function returning a ``SinkCase`` and add it
to ``CASES``. The case builds the sink on the transport the suite hands it, so the suite plays
the receiver: ``accept`` is how that receiver says yes, ``gone`` how it says "never again".
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from poller.config import DiscordSinkConfig, SlackSinkConfig, TeamsSinkConfig, WebhookSinkConfig
from poller.events import Event, EventType
from poller.sinks import Sink
from poller.sinks.discord import DiscordSink
from poller.sinks.slack import SlackSink
from poller.sinks.teams import TeamsSink
from poller.sinks.webhook import WebhookSink

SECRET = "whsec_" + base64.b64encode(b"contract-secret-0123456789abcdef").decode()
MESSAGE_BODY = "hello from the contract suite"

_sids = itertools.count(1)


def make_event(
    *,
    session_sid: str = "KC" + "a" * 32,
    event_type: EventType = EventType.CREATED,
    body: str = MESSAGE_BODY,
    event_id: str | None = None,
) -> Event:
    """Return a realistic message event (record shaped like tests/fixtures/interaction_fetch)."""
    n = next(_sids)
    sid = f"KI{n:032x}"
    interaction: dict[str, Any] = {
        "sid": sid,
        "service_sid": "KS" + "a" * 32,
        "session_sid": session_sid,
        "account_sid": "AC" + "a" * 32,
        "data": json.dumps({"body": body}, ensure_ascii=False),
        "type": "message",
        "date_created": "2026-11-27T10:00:00Z",
        "date_updated": "2026-11-27T10:00:05Z",
        "inbound_participant_sid": "KP" + "a" * 32,
        "inbound_resource_sid": "SM" + "a" * 32,
        "inbound_resource_status": "received",
        "inbound_resource_type": "Message",
        "inbound_resource_url": None,
        "outbound_participant_sid": "KP" + "b" * 32,
        "outbound_resource_sid": "SM" + "b" * 32,
        "outbound_resource_status": "delivered",
        "outbound_resource_type": "Message",
        "outbound_resource_url": None,
        "url": f"https://proxy.twilio.com/v1/Services/KS/Sessions/{session_sid}/Interactions/{sid}",
    }
    changes = (
        {"outbound_resource_status": ("sent", "delivered")}
        if event_type is EventType.UPDATED
        else None
    )
    return Event(
        id=event_id or f"evt_{n:032x}",
        type=event_type,
        service_sid=interaction["service_sid"],
        session_sid=session_sid,
        interaction_sid=sid,
        interaction=interaction,
        timestamp="2026-11-27T10:00:05Z",
        changes=changes,
        sort_key=f"2026-11-27T10:00:00Z {sid}",
    )


class MemoryThreads:
    """An in-memory stand-in for the store's Slack thread table."""

    def __init__(self) -> None:
        self.threads: dict[tuple[str, str], str] = {}

    async def thread_ts(self, sink: str, session_sid: str) -> str | None:
        return self.threads.get((sink, session_sid))

    async def set_thread_ts(self, sink: str, session_sid: str, ts: str) -> None:
        self.threads[(sink, session_sid)] = ts


Answer = Callable[[httpx.Request], httpx.Response]
# (transport, include_data, thread store) -> a sink sending through that transport
Builder = Callable[[httpx.AsyncBaseTransport, bool, MemoryThreads], Sink]


def _plain(status: int) -> Answer:
    return lambda request: httpx.Response(status, text="")


@dataclass(frozen=True)
class SinkCase:
    id: str
    build: Builder
    # Strings that must never reach a log line or an error message.
    secrets: tuple[str, ...]
    accept: Answer = field(default=_plain(200))
    gone: Answer = field(default=_plain(410))
    # A refusal that retrying can never fix: the event is dead-lettered at once.
    refused: Answer = field(default=_plain(400))


def webhook_case() -> SinkCase:
    def build(
        transport: httpx.AsyncBaseTransport, include_data: bool, threads: MemoryThreads
    ) -> Sink:
        config = WebhookSinkConfig.model_validate(
            {
                "name": "contract-webhook",
                "type": "webhook",
                "url": "https://receiver.example/hooks/tok-in-url-9f8e7d",
                "secret": SECRET,
                "include_data": include_data,
            }
        )
        return WebhookSink(config, transport=transport)

    return SinkCase(
        id="webhook", build=build, secrets=(SECRET.removeprefix("whsec_"), "tok-in-url-9f8e7d")
    )


SLACK_WEBHOOK_SECRET = "hookpath-secret-5c4b3a"
SLACK_TOKEN = "xoxb-contract-token-1a2b3c"


def _slack_json(body: dict[str, Any]) -> Answer:
    return lambda request: httpx.Response(200, json=body)


def slack_webhook_case() -> SinkCase:
    def build(
        transport: httpx.AsyncBaseTransport, include_data: bool, threads: MemoryThreads
    ) -> Sink:
        config = SlackSinkConfig.model_validate(
            {
                "name": "contract-slack",
                "type": "slack",
                "webhook_url": f"https://hooks.slack.example/services/T1/B1/{SLACK_WEBHOOK_SECRET}",
                "include_data": include_data,
            }
        )
        return SlackSink(config, store=threads, transport=transport)

    return SinkCase(
        id="slack_webhook",
        build=build,
        secrets=(SLACK_WEBHOOK_SECRET,),
        accept=lambda request: httpx.Response(200, text="ok"),
        gone=lambda request: httpx.Response(404, text="no_service"),
        refused=lambda request: httpx.Response(404, text="channel_not_found"),
    )


def slack_api_case() -> SinkCase:
    def build(
        transport: httpx.AsyncBaseTransport, include_data: bool, threads: MemoryThreads
    ) -> Sink:
        config = SlackSinkConfig.model_validate(
            {
                "name": "contract-slack-api",
                "type": "slack",
                "token": SLACK_TOKEN,
                "channel": "C0CONTRACT",
                "include_data": include_data,
            }
        )
        return SlackSink(config, store=threads, transport=transport)

    return SinkCase(
        id="slack_api",
        build=build,
        secrets=(SLACK_TOKEN,),
        accept=_slack_json({"ok": True, "channel": "C0CONTRACT", "ts": "1700000000.000100"}),
        gone=_slack_json({"ok": False, "error": "token_revoked"}),
        refused=_slack_json({"ok": False, "error": "channel_not_found"}),
    )


TEAMS_URL_SECRET = "sig-teams-contract-77aa"
DISCORD_TOKEN = "discord-contract-token-88bb"


def teams_case() -> SinkCase:
    def build(
        transport: httpx.AsyncBaseTransport, include_data: bool, threads: MemoryThreads
    ) -> Sink:
        config = TeamsSinkConfig.model_validate(
            {
                "name": "contract-teams",
                "type": "teams",
                "webhook_url": f"https://prod.workflows.example/wf/1/invoke?sig={TEAMS_URL_SECRET}",
                "include_data": include_data,
            }
        )
        return TeamsSink(config, transport=transport)

    return SinkCase(
        id="teams",
        build=build,
        secrets=(TEAMS_URL_SECRET,),
        accept=_plain(202),
        gone=_plain(404),  # the workflow was deleted
    )


def discord_case() -> SinkCase:
    def build(
        transport: httpx.AsyncBaseTransport, include_data: bool, threads: MemoryThreads
    ) -> Sink:
        config = DiscordSinkConfig.model_validate(
            {
                "name": "contract-discord",
                "type": "discord",
                "webhook_url": f"https://discord.example/api/webhooks/1/{DISCORD_TOKEN}",
                "include_data": include_data,
            }
        )
        return DiscordSink(config, transport=transport)

    return SinkCase(
        id="discord",
        build=build,
        secrets=(DISCORD_TOKEN,),
        accept=lambda request: httpx.Response(200, json={"id": "1"}),
        gone=lambda request: httpx.Response(
            404, json={"message": "Unknown Webhook", "code": 10015}
        ),
        refused=lambda request: httpx.Response(
            400, json={"message": "Invalid Form Body", "code": 50035}
        ),
    )


CASES: list[Callable[[], SinkCase]] = [
    webhook_case,
    slack_webhook_case,
    slack_api_case,
    teams_case,
    discord_case,
]
