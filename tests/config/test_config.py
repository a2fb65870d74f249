"""The configuration layer: validation, one-line errors, ${ENV}, *_file secrets, summary."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from poller.config import (
    INTERACTION_TYPES,
    RESOURCE_STATUSES,
    SECRET_KEYS,
    Config,
    Secret,
    SlackSinkConfig,
    WebhookSinkConfig,
    compile_template,
    load_config,
    parse_config,
    summarize,
)
from poller.errors import ConfigError
from poller.events import INTERACTION_EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

ACCOUNT = "AC" + "0123456789abcdef" * 2
SERVICE = "KS" + "1" * 32
SERVICE_2 = "KS" + "2" * 32
SESSION = "KC" + "3" * 32
SESSION_2 = "KC" + "4" * 32
API_KEY = "SK" + "5" * 32
AUTH_TOKEN = "authtoken-f00dfeedcafe1234wxyz"
API_SECRET = "apikeysecret-0badc0de9876qrst"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-signing-key-32-bytes-lng").decode()
SLACK_URL = "https://hooks.slack.com/services/T000/B000/slackpathsecret"
SLACK_TOKEN = "xoxb-slack-bot-token-secret-7777"
HEADER_VALUE = "Bearer header-token-secret-5555"
SECRETS = (AUTH_TOKEN, API_SECRET, WEBHOOK_SECRET, SLACK_URL, SLACK_TOKEN, HEADER_VALUE)


def valid() -> dict[str, Any]:
    """A valid config using every kind of sink and every secret."""
    return {
        "twilio": {"account_sid": ACCOUNT, "auth_token": AUTH_TOKEN},
        "watch": [
            {"service_sid": SERVICE, "sessions": [SESSION]},
            {"service_sid": SERVICE_2, "all_sessions": True},
        ],
        "sinks": [
            {
                "name": "ops",
                "type": "webhook",
                "url": "https://example.com/hooks/proxy",
                "secret": WEBHOOK_SECRET,
                "headers": {"Authorization": HEADER_VALUE},
            },
            {"name": "support", "type": "slack", "webhook_url": SLACK_URL},
            {"name": "threads", "type": "slack", "token": SLACK_TOKEN, "channel": "C0123"},
        ],
    }


def parse(data: object, env: dict[str, str] | None = None) -> Config:
    return parse_config(data, env or {}, "cfg.yaml")


def error_of(data: object, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data, env)
    return str(info.value)


def assert_one_clean_line(message: str, *extra_secrets: str) -> None:
    assert "\n" not in message
    assert "Traceback" not in message
    for secret in (*SECRETS, *extra_secrets):
        assert secret not in message


def edit(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """Set (or, with value DELETE, remove) the key at a dotted path with [i] indexes."""
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]

    def apply(data: dict[str, Any]) -> None:
        node: Any = data
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
        if value is DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value

    return apply


DELETE = object()

INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    # (id, change to the valid config, key path in the message, text in the message)
    ("page-size-zero", edit("twilio.page_size", 0), "twilio.page_size", "from 1 to 1000, got 0"),
    ("page-size-big", edit("twilio.page_size", 1001), "twilio.page_size", "got 1001"),
    ("page-size-text", edit("twilio.page_size", "many"), "twilio.page_size", "got 'many'"),
    (
        "rate-zero",
        edit("twilio.max_requests_per_second", 0),
        "twilio.max_requests_per_second",
        "greater than 0",
    ),
    (
        "rate-too-high",
        edit("twilio.max_requests_per_second", 10_001),
        "twilio.max_requests_per_second",
        "at most 10000, got 10001",
    ),
    ("concurrency-zero", edit("twilio.max_concurrency", 0), "twilio.max_concurrency", "1 to 256"),
    ("timeout-negative", edit("twilio.timeout_seconds", -1), "twilio.timeout_seconds", "got -1"),
    ("timeout-bool", edit("twilio.timeout_seconds", True), "twilio.timeout_seconds", "got true"),
    (
        "account-sid-pattern",
        edit("twilio.account_sid", "AC123"),
        "twilio.account_sid",
        "AC followed by 32 hex digits",
    ),
    ("account-sid-missing", edit("twilio.account_sid", DELETE), "twilio.account_sid", "missing"),
    (
        "api-key-sid-pattern",
        edit("twilio.api_key_sid", "KS" + "5" * 32),
        "twilio.api_key_sid",
        "SK followed by 32 hex digits",
    ),
    ("auth-both", edit("twilio.api_key_sid", API_KEY), "twilio.auth_token", "not both"),
    ("auth-none", edit("twilio.auth_token", DELETE), "twilio.auth_token", "missing"),
    ("auth-token-empty", edit("twilio.auth_token", ""), "twilio.auth_token", "<hidden>"),
    ("auth-token-number", edit("twilio.auth_token", 12345678), "twilio.auth_token", "<hidden>"),
    ("unknown-top-key", edit("twillio", {}), "twillio", "unknown key"),
    (
        "unknown-twilio-key",
        edit("twilio.pagesize", 5),
        "twilio.pagesize",
        "did you mean page_size?",
    ),
    (
        "misspelt-secret-key",
        edit("twilio.auth_tokn", "hunter2-typo-secret"),
        "twilio.auth_tokn",
        "unknown key",
    ),
    ("unknown-sink-key", edit("sinks[0].urll", "x"), "sinks[0].urll", "did you mean url?"),
    ("slack-key-on-webhook", edit("sinks[0].channel", "C1"), "sinks[0].channel", "unknown key"),
    (
        "base-url-scheme",
        edit("twilio.base_url", "ftp://proxy.twilio.com"),
        "twilio.base_url",
        "http(s) URL",
    ),
    (
        "base-url-query",
        edit("twilio.base_url", "https://proxy.twilio.com/?x=1"),
        "twilio.base_url",
        "no query",
    ),
    (
        "base-url-credentials",
        edit("twilio.base_url", "https://u:pw-in-url@proxy.twilio.com"),
        "twilio.base_url",
        "user:password@",
    ),
    ("interval-below-one", edit("poll.interval_seconds", 0.5), "poll.interval_seconds", ">= 1"),
    (
        "first-run",
        edit("poll.first_run", "everything"),
        "poll.first_run",
        "'baseline' or 'notify_all'",
    ),
    ("max-attempts-zero", edit("delivery.max_attempts", 0), "delivery.max_attempts", "got 0"),
    (
        "backoff-order",
        edit("delivery.initial_backoff_seconds", 99999),
        "delivery.initial_backoff_seconds",
        "at most max_backoff_seconds",
    ),
    ("watch-empty", edit("watch", []), "watch", "at least one"),
    ("watch-missing", edit("watch", DELETE), "watch", "missing"),
    ("watch-no-selection", edit("watch[0].sessions", []), "watch[0].sessions", "non-empty"),
    (
        "watch-both-selections",
        edit("watch[1].sessions", [SESSION_2]),
        "watch[1].all_sessions",
        "not both",
    ),
    (
        "session-sid-pattern",
        edit("watch[0].sessions", [SESSION, "KI" + "3" * 32]),
        "watch[0].sessions[1]",
        "KC followed by 32 hex digits",
    ),
    (
        "service-sid-pattern",
        edit("watch[0].service_sid", "KC" + "1" * 32),
        "watch[0].service_sid",
        "KS followed by",
    ),
    (
        "service-duplicate",
        edit("watch[1]", {"service_sid": SERVICE, "sessions": [SESSION_2]}),
        "watch[1].service_sid",
        "watch[0]",
    ),
    (
        "session-duplicate",
        edit("watch[1]", {"service_sid": SERVICE_2, "sessions": [SESSION]}),
        "watch[1].sessions[0]",
        "already watched",
    ),
    (
        "sessions-not-list",
        edit("watch[0].sessions", SESSION),
        "watch[0].sessions",
        "expected a list",
    ),
    ("sinks-empty", edit("sinks", []), "sinks", "at least one"),
    ("sink-name-duplicate", edit("sinks[1].name", "ops"), "sinks[1].name", "sinks[0]"),
    ("sink-name-pattern", edit("sinks[0].name", "ops team"), "sinks[0].name", "got 'ops team'"),
    (
        "sink-type-unknown",
        edit("sinks[0].type", "fax"),
        "sinks[0].type",
        "slack, teams, discord or email",
    ),
    ("sink-type-missing", edit("sinks[0].type", DELETE), "sinks[0].type", "missing"),
    ("sink-not-mapping", edit("sinks[1]", "support"), "sinks[1]", "expected a mapping"),
    (
        "events-unknown",
        edit("sinks[0].events", ["interaction.deleted"]),
        "sinks[0].events[0]",
        "interaction.created or interaction.updated",
    ),
    ("events-empty", edit("sinks[0].events", []), "sinks[0].events", "non-empty"),
    (
        "filter-unknown-key",
        edit("sinks[0].filter", {"status": "failed"}),
        "sinks[0].filter.status",
        "unknown key",
    ),
    (
        "filter-bad-status",
        edit("sinks[0].filter", {"outbound_resource_status": ["faild"]}),
        "sinks[0].filter.outbound_resource_status[0]",
        "got 'faild'",
    ),
    (
        "filter-bad-type",
        edit("sinks[0].filter", {"type": "sms"}),
        "sinks[0].filter.type[0]",
        "message, voice or unknown",
    ),
    (
        "filter-bad-session",
        edit("sinks[0].filter", {"session_sid": [SERVICE]}),
        "sinks[0].filter.session_sid[0]",
        "Session SID",
    ),
    (
        "include-data",
        edit("sinks[0].include_data", "sometimes"),
        "sinks[0].include_data",
        "true or false",
    ),
    ("webhook-url", edit("sinks[0].url", "example.com/hook"), "sinks[0].url", "http(s) URL"),
    (
        "webhook-secret-short",
        edit("sinks[0].secret", "whsec_c2hvcnQ="),
        "sinks[0].secret",
        "<hidden>",
    ),
    (
        "webhook-secret-not-base64",
        edit("sinks[0].secret", "not-base64-secret-value!!"),
        "sinks[0].secret",
        "Standard Webhooks",
    ),
    (
        "header-reserved",
        edit("sinks[0].headers", {"Content-Type": "text/plain"}),
        "sinks[0].headers.Content-Type",
        "does not set itself",
    ),
    (
        "header-signature",
        edit("sinks[0].headers", {"webhook-signature": HEADER_VALUE}),
        "sinks[0].headers.webhook-signature",
        "does not set itself",
    ),
    (
        "header-newline",
        edit("sinks[0].headers", {"X-Token": HEADER_VALUE + "\r\nX-Evil: 1"}),
        "sinks[0].headers.X-Token",
        "<hidden>",
    ),
    (
        "header-name",
        edit("sinks[0].headers", {"Bad Header": "x"}),
        "sinks[0].headers.Bad Header",
        "header name",
    ),
    ("slack-both", edit("sinks[1].token", SLACK_TOKEN), "sinks[1].webhook_url", "not both"),
    ("slack-neither", edit("sinks[1].webhook_url", DELETE), "sinks[1].webhook_url", "missing"),
    ("slack-token-no-channel", edit("sinks[2].channel", DELETE), "sinks[2].channel", "missing"),
    (
        "slack-webhook-url",
        edit("sinks[1].webhook_url", "hooks.slack.com/services/secretpath-9"),
        "sinks[1].webhook_url",
        "<hidden>",
    ),
    (
        "slack-api-base-url",
        edit("sinks[2].api_base_url", "slack.com/api"),
        "sinks[2].api_base_url",
        "http(s) URL",
    ),
    ("slack-digest", edit("sinks[1].digest_threshold", 0), "sinks[1].digest_threshold", "got 0"),
    (
        "slack-template",
        edit("sinks[1].template", "line one\n{{ event.type "),
        "sinks[1].template",
        "line 2",
    ),
    ("http-no-port", edit("http", {"listen": "127.0.0.1"}), "http.listen", "host:port"),
    ("http-port-range", edit("http", {"listen": "127.0.0.1:70000"}), "http.listen", "to 65535"),
    ("http-bad-ipv6", edit("http", {"listen": "[::zz]:80"}), "http.listen", "host:port"),
    ("log-format", edit("log", {"format": "xml"}), "log.format", "'json', 'console' or 'auto'"),
    ("log-level", edit("log", {"level": "trace"}), "log.level", "got 'trace'"),
    ("section-not-mapping", edit("poll", [1, 2]), "poll", "expected a mapping, got a list"),
]


@pytest.mark.parametrize(
    ("change", "path", "text"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_config_is_one_line_naming_the_key_without_secrets(
    change: Callable[[dict[str, Any]], None], path: str, text: str
) -> None:
    data = valid()
    change(data)
    message = error_of(data)
    assert_one_clean_line(message, "hunter2-typo-secret", "pw-in-url", "secretpath-9")
    assert message.startswith(f"cfg.yaml: {path}: "), message
    assert text in message


def test_every_invalid_case_starts_from_a_valid_config() -> None:
    assert len(INVALID) >= 20
    assert isinstance(parse(valid()), Config)


def test_defaults_are_those_of_the_architecture() -> None:
    config = parse(valid())
    tw = config.twilio
    assert (tw.base_url, tw.page_size, tw.max_requests_per_second, tw.max_concurrency) == (
        "https://proxy.twilio.com",
        1000,
        25.0,
        8,
    )
    assert (tw.timeout_seconds, tw.retry_deadline_seconds) == (20.0, 120.0)
    assert config.state.path == Path("state.db")
    assert config.state.prune_after_seconds == 7 * 24 * 3600
    poll = config.poll
    assert (poll.interval_seconds, poll.first_run, poll.settle_seconds) == (30.0, "baseline", 900)
    assert (poll.full_sweep_seconds, poll.timeout_seconds) == (3600.0, 120.0)
    dl = config.delivery
    assert (dl.max_attempts, dl.max_age_seconds, dl.initial_backoff_seconds) == (20, 259200, 5)
    assert (dl.max_backoff_seconds, dl.concurrency) == (6 * 3600, 4)
    assert (dl.shutdown_timeout_seconds, dl.once_deadline_seconds) == (10.0, 60.0)
    assert config.http is None
    assert (config.log.format, config.log.level) == ("auto", "info")
    webhook, slack, _ = config.sinks
    assert isinstance(webhook, WebhookSinkConfig)
    assert isinstance(slack, SlackSinkConfig)
    assert webhook.events == INTERACTION_EVENT_TYPES == slack.events
    assert webhook.filter is None
    assert webhook.include_data is True
    assert slack.digest_threshold == 5
    assert slack.template is None
    assert slack.api_base_url == "https://slack.com/api"
    assert config.watch[0].all_sessions is False
    assert config.watch[1].sessions == ()


def test_valid_config_keeps_values_and_secrets_are_secret() -> None:
    config = parse(valid())
    webhook, slack, threads = config.sinks
    assert isinstance(webhook, WebhookSinkConfig)
    assert isinstance(slack, SlackSinkConfig)
    assert isinstance(threads, SlackSinkConfig)
    assert isinstance(config.twilio.auth_token, Secret)
    assert config.twilio.credentials == (ACCOUNT, AUTH_TOKEN)
    assert webhook.secret is not None
    assert webhook.secret.get_secret_value() == WEBHOOK_SECRET
    assert webhook.headers == {"Authorization": HEADER_VALUE}
    assert slack.webhook_url is not None
    assert slack.webhook_url.get_secret_value() == SLACK_URL
    assert threads.token is not None
    assert threads.channel == "C0123"
    assert config.watch[0].sessions == (SESSION,)
    assert AUTH_TOKEN not in repr(config)


def test_api_key_credentials_are_the_key_and_its_secret() -> None:
    data = valid()
    data["twilio"] = {"account_sid": ACCOUNT, "api_key_sid": API_KEY, "api_key_secret": API_SECRET}
    assert parse(data).twilio.credentials == (API_KEY, API_SECRET)


@pytest.mark.parametrize(("key", "value"), [("api_key_sid", API_KEY), ("api_key_secret", "s")])
def test_half_an_api_key_names_the_missing_half(key: str, value: str) -> None:
    data = valid()
    data["twilio"] = {"account_sid": ACCOUNT, key: value}
    other = "api_key_secret" if key == "api_key_sid" else "api_key_sid"
    assert error_of(data).startswith(f"cfg.yaml: twilio.{other}: missing")


def test_normalisations_single_strings_slash_ipv6_and_numbers_from_text() -> None:
    data = valid()
    data["twilio"].update(base_url="http://127.0.0.1:8080/proxy/", page_size="50")
    data["sinks"][0].update(events="interaction.updated", filter={"type": "message"})
    data["sinks"][1]["events"] = ["interaction.created", "interaction.created"]
    data["http"] = {"listen": "[::1]:9108"}
    data["poll"] = {"interval_seconds": "2.5"}
    config = parse(data)
    assert config.twilio.base_url == "http://127.0.0.1:8080/proxy"
    assert config.twilio.page_size == 50
    webhook = config.sinks[0]
    assert webhook.events == ("interaction.updated",)
    assert webhook.filter is not None
    assert webhook.filter.type == ("message",)
    assert webhook.filter.outbound_resource_status is None
    assert config.sinks[1].events == ("interaction.created",)
    assert config.http is not None
    assert (config.http.host, config.http.port) == ("::1", 9108)
    assert config.poll.interval_seconds == 2.5


def test_http_listen_splits_host_and_port() -> None:
    data = valid()
    data["http"] = {"listen": "0.0.0.0:9108"}
    http = parse(data).http
    assert http is not None
    assert (http.host, http.port) == ("0.0.0.0", 9108)  # noqa: S104 - parsed, never bound


def test_models_are_frozen() -> None:
    config = parse(valid())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.twilio.page_size = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.log = config.log  # type: ignore[misc]
    assert isinstance(config.watch, tuple)
    assert isinstance(config.sinks, tuple)


@given(st.integers(min_value=-5000, max_value=5000))
def test_page_size_is_accepted_exactly_from_1_to_1000(size: int) -> None:
    data = valid()
    data["twilio"]["page_size"] = size
    if 1 <= size <= 1000:
        assert parse(data).twilio.page_size == size
    else:
        assert "expected an integer from 1 to 1000" in error_of(data)


@pytest.mark.parametrize("rate", [0.5, 30, 31, 150, 10_000])
def test_rate_is_accepted_up_to_10000_and_warned_about_only_above_proxys_30(rate: float) -> None:
    data = valid()
    data["twilio"]["max_requests_per_second"] = rate
    with capture_logs() as logs:
        config = parse(data)
    assert config.twilio.max_requests_per_second == rate
    warnings = [e for e in logs if e["event"] == "config_rate_above_proxy_limit"]
    if rate > 30:
        assert warnings == [
            {
                "event": "config_rate_above_proxy_limit",
                "log_level": "warning",
                "max_requests_per_second": rate,
                "proxy_limit": 30.0,
            }
        ]
        assert config.twilio.above_proxy_limit
    else:
        assert warnings == []
        assert not config.twilio.above_proxy_limit


# -- ${ENV} ---------------------------------------------------------------------------------


def test_env_references_are_replaced_anywhere_in_strings_and_lists() -> None:
    data = valid()
    data["twilio"] = {"account_sid": "${SID}", "auth_token": "${TOKEN}"}
    data["twilio"]["base_url"] = "${SCHEME}://${HOST}:${PORT}"
    data["watch"][0]["sessions"] = ["${S1}", "KC${S2_HEX}"]
    data["sinks"][0]["headers"] = {"X-Pair": "${A}-${A}/${B}"}
    data["sinks"][0]["url"] = "https://example.com/$${NOT_A_VAR}/x"
    env = {
        "SID": ACCOUNT, "TOKEN": AUTH_TOKEN, "SCHEME": "https", "HOST": "proxy.example",
        "PORT": "8443", "S1": SESSION, "S2_HEX": "4" * 32, "A": "a", "B": "",
    }  # fmt: skip
    config = parse(data, env)
    assert config.twilio.credentials == (ACCOUNT, AUTH_TOKEN)
    assert config.twilio.base_url == "https://proxy.example:8443"
    assert config.watch[0].sessions == (SESSION, SESSION_2)
    webhook = config.sinks[0]
    assert isinstance(webhook, WebhookSinkConfig)
    assert webhook.headers == {"X-Pair": "a-a/"}
    assert webhook.url == "https://example.com/${NOT_A_VAR}/x"


def test_env_values_are_not_interpolated_again() -> None:
    data = valid()
    data["sinks"][0]["headers"] = {"X-Raw": "${RAW}"}
    webhook = parse(data, {"RAW": "$${X} ${Y}"}).sinks[0]
    assert isinstance(webhook, WebhookSinkConfig)
    assert webhook.headers == {"X-Raw": "$${X} ${Y}"}


def test_missing_env_variable_names_the_key_and_the_variable() -> None:
    data = valid()
    data["sinks"][0]["secret"] = "${WEBHOOK_SECRET}"
    message = error_of(data, {"OTHER": WEBHOOK_SECRET})
    assert message == ("cfg.yaml: sinks[0].secret: environment variable WEBHOOK_SECRET is not set")


@pytest.mark.parametrize("text", ["${}", "${BAD-NAME}", "prefix ${UNCLOSED"])
def test_malformed_env_reference_is_an_error(text: str) -> None:
    data = valid()
    data["twilio"]["base_url"] = text
    message = error_of(data)
    assert message.startswith("cfg.yaml: twilio.base_url: expected ${NAME}")
    assert_one_clean_line(message)


def test_numbers_and_booleans_can_come_from_env() -> None:
    data = valid()
    data["twilio"]["page_size"] = "${PAGE}"
    data["watch"][1]["all_sessions"] = "${ALL}"
    config = parse(data, {"PAGE": "200", "ALL": "true"})
    assert config.twilio.page_size == 200
    assert config.watch[1].all_sessions is True


def test_env_secret_that_is_invalid_is_hidden() -> None:
    data = valid()
    data["sinks"][0]["secret"] = "${WEBHOOK_SECRET}"
    message = error_of(data, {"WEBHOOK_SECRET": "not-a-real-whsec-value"})
    assert message.endswith("got <hidden>")
    assert_one_clean_line(message, "not-a-real-whsec-value")


# -- *_file secrets -------------------------------------------------------------------------


def write_config(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "poller.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def test_file_secrets_are_read_relative_to_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(AUTH_TOKEN + "\n")
    (tmp_path / "secrets" / "whsec").write_text(WEBHOOK_SECRET + "\r\n")
    (tmp_path / "secrets" / "slack").write_text(SLACK_URL)
    data = valid()
    del data["twilio"]["auth_token"], data["sinks"][0]["secret"], data["sinks"][1]["webhook_url"]
    data["twilio"]["auth_token_file"] = "secrets/token"
    data["sinks"][0]["secret_file"] = "secrets/whsec"
    data["sinks"][1]["webhook_url_file"] = str(tmp_path / "secrets" / "slack")
    config = load_config(write_config(tmp_path, data), env={})
    assert config.twilio.credentials == (ACCOUNT, AUTH_TOKEN)
    webhook, slack, _ = config.sinks
    assert isinstance(webhook, WebhookSinkConfig)
    assert isinstance(slack, SlackSinkConfig)
    assert webhook.secret is not None
    assert webhook.secret.get_secret_value() == WEBHOOK_SECRET
    assert slack.webhook_url is not None
    assert slack.webhook_url.get_secret_value() == SLACK_URL


def test_file_secret_loses_only_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc\n\n")
    data = valid()
    data["sinks"][2] = {"name": "t", "type": "slack", "token_file": "token", "channel": "C1"}
    with pytest.raises(ConfigError, match=r"sinks\[2\]\.token_file: expected a non-empty"):
        load_config(write_config(tmp_path, data), env={})
    (tmp_path / "token").write_text("abc\n")
    threads = load_config(write_config(tmp_path, data), env={}).sinks[2]
    assert isinstance(threads, SlackSinkConfig)
    assert threads.token is not None
    assert threads.token.get_secret_value() == "abc"


def test_credentials_directory_works_through_interpolation(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "twilio").write_text(API_SECRET)
    data = valid()
    data["twilio"] = {
        "account_sid": ACCOUNT,
        "api_key_sid": API_KEY,
        "api_key_secret_file": "${CREDENTIALS_DIRECTORY}/twilio",
    }
    config = load_config(write_config(tmp_path, data), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.twilio.credentials == (API_KEY, API_SECRET)


def test_missing_secret_file_names_the_key_and_the_path(tmp_path: Path) -> None:
    data = valid()
    del data["twilio"]["auth_token"]
    data["twilio"]["auth_token_file"] = "nowhere/token"
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: twilio.auth_token_file: cannot read secret file ")
    assert str(tmp_path / "nowhere" / "token") in message
    assert_one_clean_line(message)


@pytest.mark.parametrize("content", ["", "\n"])
def test_empty_secret_file_is_an_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "token").write_text(content)
    data = valid()
    del data["twilio"]["auth_token"]
    data["twilio"]["auth_token_file"] = "token"
    with pytest.raises(ConfigError, match=r"twilio\.auth_token_file: secret file .* is empty"):
        load_config(write_config(tmp_path, data), env={})


def test_secret_and_its_file_together_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "whsec").write_text(WEBHOOK_SECRET)
    data = valid()
    data["sinks"][0]["secret_file"] = "whsec"
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, data), env={})
    assert "sinks[0].secret_file: expected secret or secret_file, not both" in str(info.value)
    assert_one_clean_line(str(info.value))


def test_invalid_secret_from_a_file_names_the_file_key_and_hides_the_value(
    tmp_path: Path,
) -> None:
    (tmp_path / "whsec").write_text("file-secret-not-base64!")
    data = valid()
    del data["sinks"][0]["secret"]
    data["sinks"][0]["secret_file"] = "whsec"
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, data), env={})
    message = str(info.value)
    assert ": sinks[0].secret_file: expected a Standard Webhooks secret" in message
    assert_one_clean_line(message, "file-secret-not-base64!")


def test_file_key_of_another_sink_type_is_unknown(tmp_path: Path) -> None:
    data = valid()
    data["sinks"][1]["secret_file"] = "whsec"
    assert error_of(data).startswith("cfg.yaml: sinks[1].secret_file: unknown key")


def test_relative_state_path_is_next_to_the_config(tmp_path: Path) -> None:
    data = valid()
    assert load_config(write_config(tmp_path, data), env={}).state.path == tmp_path / "state.db"
    data["state"] = {"path": "var/poller.db"}
    config = load_config(write_config(tmp_path, data), env={})
    assert config.state.path == tmp_path / "var" / "poller.db"
    data["state"] = {"path": "/srv/poller/state.db"}
    config = load_config(write_config(tmp_path, data), env={})
    assert config.state.path == Path("/srv/poller/state.db")


# -- files and YAML -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the configuration is empty"),
        ("# only a comment\n", "the configuration is empty"),
        ("- a\n- b\n", "expected a mapping at the top level, got a list"),
        ("just text\n", "expected a mapping at the top level, got 'just text'"),
        (f'twilio:\n  auth_token: "{AUTH_TOKEN}\n', "invalid YAML at line"),
        (f"twilio:\n  auth_token: {AUTH_TOKEN}\n   bad: [\n", "invalid YAML at line 3, column"),
        (f"twilio: {{}}\ntwilio:\n  auth_token: {AUTH_TOKEN}\n", "line 2, column 1: duplicate"),
    ],
    ids=["empty", "comment-only", "list", "scalar", "unclosed-quote", "bad-indent", "dup-key"],
)
def test_unusable_file_is_one_line_without_its_text(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert_one_clean_line(message)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read the file"):
        load_config(tmp_path / "absent.yaml", env={})


def test_load_config_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = valid()
    data["twilio"]["auth_token"] = "${POLLER_TEST_TOKEN}"
    monkeypatch.setenv("POLLER_TEST_TOKEN", AUTH_TOKEN)
    assert load_config(write_config(tmp_path, data)).twilio.credentials == (ACCOUNT, AUTH_TOKEN)


# -- Slack templates ------------------------------------------------------------------------


def test_slack_template_is_compiled_at_load_and_sandboxed() -> None:
    data = valid()
    data["sinks"][1]["template"] = "{{ event.type }} in {{ session_sid }}"
    slack = parse(data).sinks[1]
    assert isinstance(slack, SlackSinkConfig)
    assert slack.template is not None
    template = compile_template(slack.template)
    assert template.render(event={"type": "interaction.created"}, session_sid="KC1") == (
        "interaction.created in KC1"
    )
    with pytest.raises(Exception, match="undefined"):
        template.render(event={"type": "x"})
    with pytest.raises(Exception, match="unsafe"):
        compile_template("{{ x.__class__.__mro__ }}").render(x=1)


# -- summary --------------------------------------------------------------------------------


def test_summary_masks_every_secret_and_names_every_part() -> None:
    data = valid()
    data["sinks"][0]["filter"] = {"outbound_resource_status": ["failed", "undelivered"]}
    data["http"] = {"listen": "127.0.0.1:9108"}
    text = summarize(parse(data))
    for secret in SECRETS:
        assert secret not in text
    assert f"auth token ****{AUTH_TOKEN[-4:]}" in text
    assert f"secret ****{WEBHOOK_SECRET[-4:]}" in text
    assert f"incoming webhook ****{SLACK_URL[-4:]}" in text
    assert f"token ****{SLACK_TOKEN[-4:]}" in text
    assert "hooks.slack.com" not in text
    for part in (
        ACCOUNT, "https://proxy.twilio.com", "page_size 1000", "25 requests/s", "state.db",
        "every 30s", "first_run baseline", SERVICE, SESSION, f"{SERVICE_2}: all sessions",
        "ops (webhook) -> https://example.com", "support (slack)", "threads (slack)",
        "channel C0123", "outbound_resource_status=failed|undelivered", "headers Authorization",
        "http: 127.0.0.1:9108", "log: format auto, level info",
    ):  # fmt: skip
        assert part in text, part


def test_summary_shows_api_key_auth_and_short_secrets_barely() -> None:
    data = valid()
    data["twilio"] = {"account_sid": ACCOUNT, "api_key_sid": API_KEY, "api_key_secret": "abcdefg"}
    text = summarize(parse(data))
    assert f"API key {API_KEY} secret ****g" in text
    assert "abcdefg" not in text
    assert "bcdefg" not in text


def test_summary_shows_only_the_host_of_a_webhook_url() -> None:
    data = valid()
    data["sinks"][0]["url"] = "https://user:pw@hooks.example.com/path/tok-in-path?key=qs-secret"
    text = summarize(parse(data))
    assert "https://hooks.example.com" in text
    for leak in ("pw", "tok-in-path", "qs-secret"):
        assert leak not in text


# -- drift guards ---------------------------------------------------------------------------


def secret_field_names() -> set[str]:
    names: set[str] = set()
    seen: set[type] = set()

    def walk(model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, annotation in get_type_hints(model).items():
            if Secret in (annotation, *get_args(annotation)):
                names.add(name)
            for sub in models_in(annotation):
                walk(sub)

    walk(Config)
    return names


def models_in(annotation: object) -> list[type]:
    """The config dataclasses a field holds, through Optional, tuple and unions."""
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return [annotation]
    return [m for arg in get_args(annotation) for m in models_in(arg)]


def file_keys(model: type) -> set[str]:
    """What a config file writes for the fields of ``model``: a ``key`` (``from``), else a name."""
    return {field.metadata.get("key") or field.name for field in dataclasses.fields(model)}


def test_secret_keys_are_exactly_the_secret_fields() -> None:
    # state.url is a Secret too (it may hold the password), but "url" is also a webhook's
    # public URL: the state's is read from url_file by its own rule, and its check never
    # echoes the value (test_config_state.py).
    assert secret_field_names() - {"url"} == SECRET_KEYS


def test_filter_values_and_sid_patterns_follow_the_twilio_spec() -> None:
    spec = json.loads((FIXTURES / "twilio_proxy_v1.json").read_text())
    schemas = spec["components"]["schemas"]
    assert set(schemas["interaction_enum_type"]["enum"]) == INTERACTION_TYPES
    assert set(schemas["interaction_enum_resource_status"]["enum"]) == RESOURCE_STATUSES
    props = schemas["proxy.v1.service.session.interaction"]["properties"]
    samples = {"account_sid": ACCOUNT, "service_sid": SERVICE, "session_sid": SESSION}
    for key, sample in samples.items():
        pattern = props[key]["pattern"]
        assert re.fullmatch(pattern, sample)
        assert not re.fullmatch(pattern, sample[:-1] + "g")
        assert "expected" in error_of(
            {**valid(), "twilio": {"account_sid": sample[:-1] + "g", "auth_token": "x"}}
        )


EXAMPLE_ENV = {
    "TWILIO_ACCOUNT_SID": ACCOUNT,
    "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
    "SLACK_WEBHOOK_URL": SLACK_URL,
}


def test_example_config_loads_with_its_env_vars() -> None:
    config = load_config(ROOT / "config.example.yaml", env=EXAMPLE_ENV)
    assert [s.name for s in config.sinks] == ["ops", "failures", "support"]
    ops, failures, support = config.sinks
    assert isinstance(ops, WebhookSinkConfig)
    assert ops.secret is not None
    assert failures.include_data is False
    assert failures.filter is not None
    assert failures.filter.outbound_resource_status == ("failed", "undelivered")
    assert isinstance(support, SlackSinkConfig)
    assert support.webhook_url is not None
    assert config.twilio.credentials == (ACCOUNT, AUTH_TOKEN)
    assert config.http is not None
    assert config.http.port == 9108


@pytest.mark.parametrize("missing", sorted(EXAMPLE_ENV))
def test_example_config_needs_each_of_its_env_vars(missing: str) -> None:
    env = {k: v for k, v in EXAMPLE_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=f"environment variable {missing} is not set"):
        load_config(ROOT / "config.example.yaml", env=env)


def test_example_config_mentions_every_key_of_the_models() -> None:
    text = (ROOT / "config.example.yaml").read_text()
    mentioned = set(re.findall(r"^[\s#-]*([a-z_]+):", text, flags=re.MULTILINE))
    mentioned |= set(re.findall(r"\bor ([a-z_]+_file):", text))
    expected: set[str] = set()
    for model in [Config, *_all_models()]:
        expected |= file_keys(model)
    expected |= {f"{name}_file" for name in SECRET_KEYS}
    assert expected - mentioned == set()


def _all_models() -> list[type]:
    found: list[type] = []
    todo: list[type] = [Config]
    while todo:
        model = todo.pop()
        for annotation in get_type_hints(model).values():
            for sub in models_in(annotation):
                if sub not in found:
                    found.append(sub)
                    todo.append(sub)
    return found


def test_config_given_by_relative_path_anchors_paths_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "token").write_text(AUTH_TOKEN)
    data = valid()
    del data["twilio"]["auth_token"]
    data["twilio"]["auth_token_file"] = "token"
    write_config(tmp_path / "conf", data)
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/poller.yaml", env={})
    assert config.state.path == tmp_path / "conf" / "state.db"
    assert config.twilio.credentials == (ACCOUNT, AUTH_TOKEN)


def test_summary_says_when_the_rate_exceeds_proxys_30_per_second() -> None:
    data = valid()
    data["twilio"]["max_requests_per_second"] = 200
    assert "200 requests/s per Service (above Twilio Proxy's 30/s" in summarize(parse(data))
    assert "above Twilio Proxy" not in summarize(parse(valid()))


@pytest.mark.parametrize(
    ("key", "where"),
    [(True, "twilio[1]"), (3, "twilio[3]"), (datetime.date(2026, 1, 1), "twilio.datetime.date")],
    ids=["yaml-on", "int", "date"],
)
def test_a_key_that_is_not_a_string_is_placed_as_it_always_was(key: object, where: str) -> None:
    data = valid()
    data["twilio"][key] = 1
    with pytest.raises(ConfigError, match=re.escape(f"<config>: {where}")):
        parse_config(data, {})
