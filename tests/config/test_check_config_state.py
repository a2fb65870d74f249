"""``check-config`` on a PostgreSQL state: the URL read, shown without its password, and never
used to connect; the state checks tests/config/test_config_state.py leaves out.
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


@pytest.mark.parametrize(
    ("state", "key", "expected"),
    [
        ({"url": URL, "url_file": "/run/secrets/url"}, "state.url_file", "not both"),
        ({"url": 5}, "state.url", "expected a string"),
    ],
    ids=["url-and-url-file", "not-a-string"],
)
def test_a_bad_state_url_is_one_line_that_never_shows_the_url(
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
