"""`poller test-sink NAME`: the real CLI sends one sample event to one configured sink.

Against a real signed-webhook receiver and the strict fake Slack on 127.0.0.1; Twilio is never
called (the config points it at a closed port) and the state file is never created.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from poller.lab.receiver import ReceiverState, ReceiverThread
from tests.fake_slack import TOKEN, WEBHOOK_PATH, FakeSlack, fake_slack_in_thread
from tests.support import SECRET, run_poller

pytestmark = pytest.mark.slow

CHANNEL = "C0TESTSINK"


@pytest.fixture
def receiver() -> Iterator[ReceiverThread]:
    with ReceiverThread(ReceiverState(secret=SECRET)) as running:
        yield running


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack_in_thread() as fake:
        yield fake


def _config(folder: Path, sinks: list[dict[str, Any]]) -> str:
    """Write a config whose Twilio is a closed port: test-sink must not need it."""
    config = {
        "twilio": {
            "account_sid": "AC" + "0" * 32,
            "auth_token": "twilio-token-never-used",
            "base_url": "http://127.0.0.1:9",
        },
        "state": {"path": str(folder / "state.db")},
        "watch": [{"service_sid": "KS" + "0" * 32, "all_sessions": True}],
        "sinks": sinks,
        "log": {"format": "json", "level": "info"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def _ops(receiver: ReceiverThread) -> dict[str, Any]:
    return {"name": "ops", "type": "webhook", "url": f"{receiver.base_url}/hooks/ops"}


def test_webhook_sink_accepts_a_signed_sample_event_and_exits_0(
    receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = _config(tmp_path, [{**_ops(receiver), "secret": SECRET}])
    result = run_poller("test-sink", "ops", "-c", config)
    assert result.returncode == 0, result.stderr
    (item,) = receiver.received()
    assert item.signed and item.path == "/hooks/ops"
    assert Webhook(SECRET).verify(item.raw, dict(item.headers)) == item.body
    assert item.event_type == "interaction.created"
    interaction = item.body["data"]["interaction"]
    assert interaction["sid"].startswith("KI") and interaction["type"] == "message"
    assert (
        result.stdout.strip() == f"sink ops: accepted event {item.webhook_id} (interaction.created)"
    )
    assert not (tmp_path / "state.db").exists()


def test_a_sink_taking_only_session_events_gets_a_sample_session_event(
    receiver: ReceiverThread, tmp_path: Path
) -> None:
    template = (
        '{"type": {{ event.type | tojson }}, "closed": {{ event.data.session.sid | tojson }}}'
    )
    sink = {
        **_ops(receiver),
        "secret": SECRET,
        "events": ["session.updated"],
        "body_template": template,
    }
    result = run_poller("test-sink", "ops", "-c", _config(tmp_path, [sink]))
    assert result.returncode == 0, result.stderr
    (item,) = receiver.received()
    assert item.body == {"type": "session.updated", "closed": "KC" + "a" * 32}
    assert result.stdout.strip().endswith("(session.updated)")


def test_include_data_false_leaves_the_body_out_of_the_sample_event(
    receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = _config(tmp_path, [{**_ops(receiver), "secret": SECRET, "include_data": False}])
    assert run_poller("test-sink", "ops", "-c", config).returncode == 0
    (item,) = receiver.received()
    assert item.body["data"]["interaction"]["sid"].startswith("KI")
    assert "data" not in item.body["data"]["interaction"]
    assert b"test message" not in item.raw


def test_receiver_answering_500_exits_1_with_one_line_naming_the_sink_and_status(
    receiver: ReceiverThread, tmp_path: Path
) -> None:
    receiver.call(lambda: setattr(receiver.state, "status", 500))
    config = _config(tmp_path, [{**_ops(receiver), "secret": SECRET}])
    result = run_poller("test-sink", "ops", "-c", config)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("sink ops: refused") and "500" in line
    assert SECRET not in result.stderr and "Traceback" not in result.stderr
    assert receiver.received() == []
    assert receiver.call(lambda: receiver.state.attempts) == 1


def test_unknown_sink_name_exits_2_naming_the_configured_sinks(
    receiver: ReceiverThread, slack: FakeSlack, tmp_path: Path
) -> None:
    chat = {"name": "support", "type": "slack", "webhook_url": slack.webhook_url}
    config = _config(tmp_path, [_ops(receiver), chat])
    result = run_poller("test-sink", "nope", "-c", config)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "'nope'" in line and "ops, support" in line
    assert WEBHOOK_PATH not in result.stderr
    assert receiver.call(lambda: receiver.state.attempts) == 0
    assert slack.accepted == [] and slack.rejected == []


def test_slack_webhook_sink_gets_one_valid_message_and_exits_0(
    slack: FakeSlack, tmp_path: Path
) -> None:
    chat = {"name": "support", "type": "slack", "webhook_url": slack.webhook_url}
    result = run_poller("test-sink", "support", "-c", _config(tmp_path, [chat]))
    assert result.returncode == 0, result.stderr
    assert slack.rejected == []
    (post,) = slack.accepted
    assert post.kind == "webhook" and post.target == WEBHOOK_PATH
    assert post.payload["text"].strip() and post.payload["blocks"]
    assert "driver is 2 minutes away" in json.dumps(post.payload)
    assert result.stdout.startswith("sink support: accepted event evt_")
    assert WEBHOOK_PATH not in result.stdout + result.stderr


def test_slack_web_api_sink_posts_to_the_channel_outside_any_thread(
    slack: FakeSlack, tmp_path: Path
) -> None:
    chat = {
        "name": "support",
        "type": "slack",
        "token": TOKEN,
        "channel": CHANNEL,
        "api_base_url": slack.api_base_url,
    }
    result = run_poller("test-sink", "support", "-c", _config(tmp_path, [chat]))
    assert result.returncode == 0, result.stderr
    assert slack.rejected == []
    (post,) = slack.accepted
    assert post.kind == "api" and post.target == CHANNEL and post.thread_ts is None
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in result.stdout + result.stderr
    assert not (tmp_path / "state.db").exists()


def test_slack_refusal_exits_1_naming_slacks_error(slack: FakeSlack, tmp_path: Path) -> None:
    slack.fail_webhook(404, "channel_not_found")
    chat = {"name": "support", "type": "slack", "webhook_url": slack.webhook_url}
    result = run_poller("test-sink", "support", "-c", _config(tmp_path, [chat]))
    assert result.returncode == 1
    assert result.stdout == ""
    refusal = [line for line in result.stderr.splitlines() if line.startswith("sink support:")]
    assert len(refusal) == 1 and "channel_not_found" in refusal[0] and "404" in refusal[0]
    assert slack.accepted == []
    assert WEBHOOK_PATH not in result.stderr
