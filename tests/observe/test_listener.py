"""What a reload can and cannot change of the running listener."""

from __future__ import annotations

from typing import Any

from poller.config import parse_config
from poller.observe.listener import listener_key

ACCOUNT = "AC" + "0123456789abcdef" * 2


def config(http: dict[str, Any] | None) -> Any:
    data: dict[str, Any] = {
        "twilio": {"account_sid": ACCOUNT, "auth_token": "token-secret-1234"},
        "watch": [{"service_sid": "KS" + "1" * 32, "all_sessions": True}],
        "sinks": [{"name": "ops", "type": "webhook", "url": "https://example.com/hook"}],
    }
    if http is not None:
        data["http"] = http
    return parse_config(data, env={})


def test_the_same_listener_read_twice_is_no_change_and_any_edit_is_one() -> None:
    auth = {"username": "ops", "password": "pw-1"}
    same = [config({"listen": "127.0.0.1:9108", "auth": auth}) for _ in range(2)]
    assert listener_key(same[0]) == listener_key(same[1])
    assert listener_key(config(None)) is None
    edits: list[dict[str, Any]] = [
        {"listen": "127.0.0.1:9109", "auth": auth},
        {"listen": "127.0.0.1:9108", "auth": {**auth, "password": "pw-2"}},
        {"listen": "127.0.0.1:9108"},
    ]
    for edit in edits:
        assert listener_key(config(edit)) != listener_key(same[0]), edit
