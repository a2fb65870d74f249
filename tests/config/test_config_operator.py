"""The operator's keys: ``delivery.history_seconds`` and ``http.auth``, checked and summarised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poller.config import load_config, parse_config, summarize
from poller.errors import ConfigError

ACCOUNT = "AC" + "0123456789abcdef" * 2
SERVICE = "KS" + "1" * 32
PASSWORD = "status-page-password-4242"


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "twilio": {"account_sid": ACCOUNT, "auth_token": "token-secret-1234"},
        "watch": [{"service_sid": SERVICE, "all_sessions": True}],
        "sinks": [{"name": "ops", "type": "webhook", "url": "https://example.com/hook"}],
        **extra,
    }


def test_history_is_kept_a_week_by_default_and_zero_keeps_nothing() -> None:
    assert parse_config(minimal(), env={}).delivery.history_seconds == 7 * 24 * 3600
    config = parse_config(minimal(delivery={"history_seconds": 0}), env={})
    assert config.delivery.history_seconds == 0
    assert "no history" in summarize(config)
    assert "history 604800s" in summarize(parse_config(minimal(), env={}))


def test_a_negative_history_is_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(delivery={"history_seconds": -1}), env={})
    assert "delivery.history_seconds" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_http_auth_reads_its_password_from_a_file_and_never_shows_it(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    data = minimal(
        http={"listen": "0.0.0.0:9108", "auth": {"username": "ops", "password_file": "pw"}}
    )
    path = tmp_path / "poller.yaml"
    path.write_text(json.dumps(data))
    config = load_config(path, env={})
    assert config.http is not None and config.http.auth is not None
    assert config.http.auth.username == "ops"
    assert config.http.auth.password.get_secret_value() == PASSWORD
    assert not config.http.loopback
    text = summarize(config)
    assert "basic auth for ops" in text
    assert PASSWORD not in text


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [("127.0.0.1:0", True), ("[::1]:9108", True), ("localhost:9108", True),
     ("0.0.0.0:9108", False), ("192.0.2.7:9108", False), ("[::]:9108", False)],
)  # fmt: skip
def test_a_listener_knows_whether_it_is_loopback(listen: str, loopback: bool) -> None:
    config = parse_config(minimal(http={"listen": listen}), env={})
    assert config.http is not None
    assert config.http.loopback is loopback
    said = "no auth (loopback)" if loopback else "open to the network"
    assert said in summarize(config)


@pytest.mark.parametrize(
    ("auth", "key"),
    [({"username": "ops"}, "http.auth.password"),
     ({"username": "a:b", "password": "x"}, "http.auth.username"),
     ({"username": "ops", "password": "x", "realm": "y"}, "http.auth.realm")],
)  # fmt: skip
def test_a_bad_http_auth_is_one_line_naming_the_key(auth: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(http={"listen": "127.0.0.1:0", "auth": auth}), env={})
    assert key in str(caught.value)
    assert "\n" not in str(caught.value)
