"""Every config error message stays what it was: a snapshot of the first problem reported for
configs made by breaking one key of a valid config at a time (each key of each section and sink
type, with values of every YAML type), taken from the pydantic config layer before it was
replaced (``config_messages.json`` beside this file: up to three cases of each kind of message)."""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from poller.config import parse_config, summarize
from poller.errors import ConfigError
from tests.config.test_config import (
    ACCOUNT,
    API_KEY,
    SECRETS,
    SESSION,
    SLACK_TOKEN,
    SLACK_URL,
    valid,
)

SNAPSHOT = Path(__file__).resolve().parent / "config_messages.json"
DELETE = "DEL"
VALUES: list[object] = [
    None, "", " x", "x", -1, 0, 1, 0.5, 1.0, 1001, 70000, 10001, True, False, [], ["x"], [1],
    {}, {"a": 1}, "true", "no", "2.5", "  3 ", "nan", 1e400, b"bytes", datetime.date(2020, 1, 1),
    "x" * 80, [None], "https://example.com/x", "whsec_c2hvcnQ=", "a@b.co", "127.0.0.1:0",
    {"X-A": "b"}, {5: "x"}, "{% if %}", "text/plain", "webhook", DELETE,
]  # fmt: skip
SECTIONS = {
    "twilio": ["account_sid", "auth_token", "api_key_sid", "api_key_secret", "base_url",
               "page_size", "max_requests_per_second", "max_concurrency", "max_page_bytes",
               "max_pages", "max_sessions_per_service", "nope"],
    "state": ["path", "prune_after_seconds", "pathh"],
    "poll": ["interval_seconds", "first_run", "settle_seconds"],
    "delivery": ["max_attempts", "initial_backoff_seconds", "concurrency", "max_attempt"],
    "http": ["listen", "lsten"],
    "log": ["format", "level", "levl"],
}  # fmt: skip
SINKS: dict[str, dict[str, object]] = {
    "webhook": {"name": "w", "type": "webhook", "url": "https://example.com/h"},
    "slack": {"name": "s", "type": "slack", "webhook_url": SLACK_URL},
    "slackapi": {"name": "s", "type": "slack", "token": SLACK_TOKEN, "channel": "C1"},
    "teams": {"name": "t", "type": "teams", "webhook_url": "https://x.example/t"},
    "email": {"name": "e", "type": "email", "smtp_host": "m", "from": "a@b.co", "to": ["c@d.co"]},
}
SINK_KEYS = [
    "name", "events", "filter", "include_data", "type", "url", "secret", "headers",
    "body_template", "content_type", "webhook_url", "token", "channel", "digest_threshold",
    "template", "smtp_port", "security", "username", "password", "from", "sender", "to",
    "subject_template", "urll", "tokn",
]  # fmt: skip
FILTER_KEYS = ["type", "outbound_resource_status", "session_sid", "status"]


def _set(node: dict[Any, Any], key: object, value: object) -> None:
    if value == DELETE:
        node.pop(key, None)
    else:
        node[key] = value


def cases() -> Iterator[tuple[str, dict[str, Any]]]:
    """Configs with one key broken, named by what was changed."""
    base = valid()
    base["http"] = {"listen": "127.0.0.1:1"}
    for section, keys in SECTIONS.items():
        for key in keys:
            for value in VALUES:
                data = copy.deepcopy(base)
                _set(data.setdefault(section, {}), key, value)
                yield f"{section}.{key}={value!r}", data
    for top in [*SECTIONS, "watch", "sinks", "extra"]:
        for value in VALUES:
            data = copy.deepcopy(base)
            _set(data, top, value)
            yield f"{top}={value!r}", data
    for key in ["service_sid", "sessions", "all_sessions", "x"]:
        for value in [*VALUES, [SESSION, SESSION], [SESSION, "bad"]]:
            data = copy.deepcopy(base)
            _set(data["watch"][0], key, value)
            yield f"watch[0].{key}={value!r}", data
    for kind, sink in SINKS.items():
        for key in SINK_KEYS:
            for value in VALUES:
                data = {**copy.deepcopy(base), "sinks": [copy.deepcopy(sink)]}
                _set(data["sinks"][0], key, value)
                yield f"{kind}.{key}={value!r}", data
        for key in FILTER_KEYS:
            for value in VALUES[:-1]:
                data = {**copy.deepcopy(base), "sinks": [{**sink, "filter": {key: value}}]}
                yield f"{kind}.filter.{key}={value!r}", data
    twilio: dict[str, object] = {"account_sid": ACCOUNT}
    changes: list[tuple[str, dict[str, object]]] = [
        ("api-key-sid-only", {"api_key_sid": API_KEY}),
        ("api-key-secret-only", {"api_key_secret": "s"}),
        ("bad-sid-and-page-size", {"account_sid": "bad", "page_size": 0}),
        ("backoff-order", {"auth_token": "t"}),
    ]
    for label, change in changes:
        data = {**copy.deepcopy(base), "twilio": {**twilio, **change}}
        if label == "backoff-order":
            data["delivery"] = {"initial_backoff_seconds": "10", "max_backoff_seconds": "5.5"}
        yield label, data


def outcome(data: dict[str, Any]) -> str:
    """``E`` and the one-line error, or ``OK`` and the summary."""
    try:
        config = parse_config(data, {}, "cfg.yaml")
    except ConfigError as exc:
        return f"E {exc}"
    return f"OK {summarize(config)}"


def test_every_message_is_the_one_of_the_snapshot() -> None:
    expected: dict[str, str] = json.loads(SNAPSHOT.read_text())
    made = dict(cases())
    assert set(expected) <= set(made)
    differ = {label: outcome(made[label]) for label in expected}
    differ = {label: got for label, got in differ.items() if got != expected[label]}
    assert differ == {}


def test_the_snapshot_holds_every_kind_of_message_and_no_secret() -> None:
    messages = json.loads(SNAPSHOT.read_text()).values()
    kinds = {message.split(": ", 2)[-1].split(", got ")[0] for message in messages}
    assert len(kinds) >= 80
    assert any(kind.startswith("unknown key (did you mean") for kind in kinds)
    assert any(kind.startswith("Keys should be strings") for kind in kinds)
    assert not [message for message in messages for secret in SECRETS if secret in message]
