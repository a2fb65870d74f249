"""The ``state`` section for several replicas: ``url``/``url_file``, its checks, its summary.

A URL may hold the password: no message, summary or command output ever shows it, and
``check-config`` reads it without connecting to anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.config import parse_config, summarize
from poller.errors import ConfigError
from tests.support import run_poller

PASSWORD = "st4te-pw-0193"
URL = f"postgresql://poller:{PASSWORD}@127.0.0.1:1/poller?sslmode=disable"


def data(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-state-config"},
        "state": state,
        "watch": [{"service_sid": "KS" + "b" * 32, "all_sessions": True}],
        "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
    }


def test_url_file_reads_the_url_and_the_state_is_postgres(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(URL + "\n")
    state = parse_config(data({"url_file": str(tmp_path / "url")}), env={}).state
    assert state.url is not None
    assert state.url.get_secret_value() == URL
    assert (state.backend, state.where) == (
        "postgres",
        "postgresql://poller:***@127.0.0.1:1/poller",
    )
    assert PASSWORD not in repr(state)


def test_a_path_alone_is_sqlite() -> None:
    state = parse_config(data({"path": "/var/lib/poller/state.db"}), env={}).state
    assert (state.backend, state.where, state.url) == ("sqlite", "/var/lib/poller/state.db", None)


@pytest.mark.parametrize(
    ("state", "key", "expected"),
    [
        ({"url": URL, "path": "state.db"}, "state.path", "expected state.path or state.url"),
        ({"url": f"mysql://poller:{PASSWORD}@db/poller"}, "state.url", "postgresql://user@host"),
        ({"url": f"{PASSWORD}"}, "state.url", "postgresql://user@host"),
        ({"url": URL, "url_file": "/run/secrets/url"}, "state.url_file", "not both"),
        ({"url": URL, "lease_seconds": 2}, "state.lease_seconds", "expected a number >= 3"),
    ],
    ids=["url-and-path", "not-postgresql", "not-a-url", "url-and-url-file", "short-lease"],
)
def test_a_bad_state_section_is_one_line_that_never_shows_the_url(
    state: dict[str, Any], key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data(state), env={})
    message = str(caught.value)
    assert message.startswith(f"<config>: {key}: ") and expected in message
    assert PASSWORD not in message and "\n" not in message


def test_url_file_and_path_together_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(URL)
    with pytest.raises(ConfigError, match=r"state\.path: expected state\.path or state\.url"):
        parse_config(data({"url_file": str(tmp_path / "url"), "path": "x.db"}), env={})


def test_the_summary_shows_the_database_without_its_password() -> None:
    lines = summarize(parse_config(data({"url": URL, "lease_seconds": 20}), env={})).splitlines()
    (state,) = [line for line in lines if line.startswith("state: ")]
    assert state == (
        "state: postgresql://poller:***@127.0.0.1:1/poller "
        "(PostgreSQL, leases of 20s; prune gone sessions after 604800s)"
    )


def test_check_config_prints_the_redacted_url_without_connecting(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(URL)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data({"url_file": str(tmp_path / "url")})))
    # Nothing listens on port 1: a check that connected would fail.
    result = run_poller("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "state: postgresql://poller:***@127.0.0.1:1/poller (PostgreSQL" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
