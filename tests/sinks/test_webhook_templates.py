"""Templated webhook bodies: the PagerDuty and Opsgenie templates of docs/sinks.md, as sent."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from poller.config import WebhookSinkConfig, parse_config
from poller.errors import ConfigError, PermanentDeliveryError
from poller.events import Event, EventType
from poller.sinks.webhook import WebhookSink
from tests.sink_bursts import HOSTILE
from tests.sink_contract_cases import SECRET, make_event

DOC = Path(__file__).resolve().parents[2] / "docs" / "sinks.md"
ENV = {"PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY0123456789abcdef012345", "OPSGENIE_API_KEY": "og-key"}
PAGERDUTY_SEVERITIES = {"critical", "error", "warning", "info"}
OPSGENIE_PRIORITIES = {"P1", "P2", "P3", "P4", "P5"}


def documented_sink(name: str) -> dict[str, Any]:
    """The YAML sink that docs/sinks.md gives after ``<!-- template: name -->``."""
    match = re.search(rf"<!-- template: {name} -->\n```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/sinks.md has no {name} template"
    (sink,) = yaml.safe_load(match.group(1))
    assert isinstance(sink, dict)
    return sink


def load_sink(sink: dict[str, Any]) -> WebhookSinkConfig:
    data = {
        "twilio": {"account_sid": "AC" + "0" * 32, "auth_token": "t"},
        "watch": [{"service_sid": "KS" + "0" * 32, "all_sessions": True}],
        "sinks": [sink],
    }
    (config,) = parse_config(data, ENV).sinks
    assert isinstance(config, WebhookSinkConfig)
    return config


async def sent(config: WebhookSinkConfig, event: Event) -> httpx.Request:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    sink = WebhookSink(config, transport=httpx.MockTransport(handler))
    await sink.send(event)
    await sink.aclose()
    return seen[0]


def events() -> list[Event]:
    failed = make_event(event_type=EventType.UPDATED)
    failed = Event(
        **{
            **{f: getattr(failed, f) for f in Event.__dataclass_fields__},
            "interaction": {**failed.interaction, "outbound_resource_status": "failed"},
        }
    )
    return [make_event(), failed, make_event(body=HOSTILE + '"}\n</script>')]


def check_pagerduty(body: dict[str, Any]) -> None:
    """The required fields of a PagerDuty Events API v2 trigger, and their types."""
    assert set(body) >= {"routing_key", "event_action", "payload"}
    assert body["routing_key"] == ENV["PAGERDUTY_ROUTING_KEY"]
    assert body["event_action"] in {"trigger", "acknowledge", "resolve"}
    payload = body["payload"]
    assert isinstance(payload["summary"], str)
    assert 1 <= len(payload["summary"]) <= 1024
    assert isinstance(payload["source"], str)
    assert payload["source"]
    assert payload["severity"] in PAGERDUTY_SEVERITIES
    assert isinstance(body["dedup_key"], str)
    assert len(body["dedup_key"]) <= 255
    assert isinstance(payload.get("custom_details", {}), dict)


def check_opsgenie(body: dict[str, Any]) -> None:
    """Opsgenie's Create Alert fields: message required (<= 130), the others' limits."""
    assert isinstance(body["message"], str)
    assert 1 <= len(body["message"]) <= 130
    assert len(body.get("alias", "")) <= 512
    assert len(body.get("description", "")) <= 15000
    assert len(body.get("entity", "")) <= 512
    assert len(body.get("source", "")) <= 100
    assert all(isinstance(tag, str) for tag in body.get("tags", []))
    assert all(isinstance(v, str) for v in body.get("details", {}).values())
    assert body.get("priority", "P3") in OPSGENIE_PRIORITIES


@pytest.mark.parametrize(
    ("name", "check"), [("pagerduty", check_pagerduty), ("opsgenie", check_opsgenie)]
)
async def test_documented_templates_send_the_shape_the_service_documents(
    name: str, check: Any
) -> None:
    config = load_sink({**documented_sink(name), "secret": SECRET})
    for event in events():
        request = await sent(config, event)
        body = json.loads(request.content)
        check(body)
        assert request.headers["content-type"] == "application/json"
        # The Standard Webhooks signature covers exactly the rendered body.
        assert Webhook(SECRET).verify(request.content, dict(request.headers)) == body


async def test_pagerduty_severity_follows_the_message_status() -> None:
    config = load_sink(documented_sink("pagerduty"))
    severities = [
        json.loads((await sent(config, event)).content)["payload"]["severity"]
        for event in events()[:2]
    ]
    assert severities == ["info", "error"]


async def test_opsgenie_key_goes_in_the_header_and_a_hostile_body_stays_a_string() -> None:
    config = load_sink(documented_sink("opsgenie"))
    request = await sent(config, events()[2])
    assert request.headers["authorization"] == "GenieKey og-key"
    assert json.loads(request.content)["source"] == "twilio-proxy-poller"


def test_a_template_that_is_not_json_for_one_event_type_is_a_config_error() -> None:
    template = '{% if event.type == "interaction.updated" %}{"a": oops}{% else %}{}{% endif %}'
    sink = {"name": "t", "type": "webhook", "url": "https://x.example/h", "body_template": template}
    with pytest.raises(ConfigError) as info:
        load_sink(sink)
    message = str(info.value)
    assert "sinks[0].body_template: expected a template rendering JSON" in message
    assert "interaction.updated" in message
    assert "Expecting value at line 1, column 7" in message
    assert load_sink({**sink, "events": ["interaction.created"]}).body_template == template


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ event.data.nothing }}", "UndefinedError"),
        ("{{ event.__class__ }}", "SecurityError"),
        ("{% for %}", "expected a valid Jinja2 body template, line 1"),
    ],
)
def test_templates_that_cannot_render_a_sample_are_config_errors(
    template: str, expected: str
) -> None:
    sink = {"name": "t", "type": "webhook", "url": "https://x.example/h", "body_template": template}
    with pytest.raises(ConfigError, match=expected):
        load_sink(sink)


async def test_a_template_failing_at_run_time_refuses_the_event_for_good() -> None:
    # Renders for the sample (a message), divides by zero for a call.
    template = '{"n": {{ 1 // (event.data.interaction.type == "message") | int }}}'
    config = load_sink(
        {"name": "t", "type": "webhook", "url": "https://x.example/h", "body_template": template}
    )
    call = make_event()
    call = Event(
        **{
            **{f: getattr(call, f) for f in Event.__dataclass_fields__},
            "interaction": {**call.interaction, "type": "voice"},
        }
    )
    with pytest.raises(PermanentDeliveryError, match="body_template failed for this event"):
        await sent(config, call)


async def test_content_type_is_sent_as_configured() -> None:
    config = load_sink(
        {
            "name": "t",
            "type": "webhook",
            "url": "https://x.example/h",
            "body_template": '{"text": {{ event.type | tojson }}}',
            "content_type": "application/vnd.example+json; charset=utf-8",
        }
    )
    request = await sent(config, make_event())
    assert request.headers["content-type"] == "application/vnd.example+json; charset=utf-8"
    assert request.content == b'{"text": "interaction.created"}'


@pytest.mark.parametrize("session_type", ["session.created", "session.updated"])
def test_a_template_is_checked_on_the_session_events_its_sink_lists(session_type: str) -> None:
    # Fine for interaction events; a session event has no interaction to read.
    template = '{"sid": {{ event.data.interaction.sid | tojson }}}'
    sink = {"name": "t", "type": "webhook", "url": "https://x.example/h", "body_template": template}
    assert load_sink(sink).body_template == template  # the default events: interactions only
    with pytest.raises(ConfigError) as info:
        load_sink({**sink, "events": ["interaction.created", session_type]})
    message = str(info.value)
    assert "sinks[0].body_template: expected a template that renders a sample" in message
    assert f"sample {session_type} event: UndefinedError" in message


def test_a_template_for_session_events_sees_the_session_and_its_changes() -> None:
    template = (
        '{"sid": {{ event.data.session.sid | tojson }},'
        ' "changes": {{ event.data.changes | default({}) | tojson }}}'
    )
    sink = {
        "name": "t",
        "type": "webhook",
        "url": "https://x.example/h",
        "events": ["session.created", "session.updated"],
        "body_template": template,
    }
    assert load_sink(sink).events == ("session.created", "session.updated")
