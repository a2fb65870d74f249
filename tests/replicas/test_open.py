"""``poller.replicas.open``: the replica's id, and the one choice of an ownership."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from poller.config import parse_config
from poller.errors import ConfigError
from poller.replicas.base import SoleOwner
from poller.replicas.open import make_ownership, replica_id, watched_services
from poller.state.memory.store import MemoryStore

A, B = "KS" + "a" * 32, "KS" + "b" * 32


def _config(**state: Any) -> Any:
    return parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
            "state": state,
            "watch": [
                {"service_sid": B, "all_sessions": True},
                {"service_sid": A, "sessions": ["KC" + "1" * 32]},
            ],
            "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        },
        {},
    )


@pytest.mark.parametrize(
    ("configured", "expected"),
    [("web-1", "web-1"), ("  web-2 \n", "web-2"), (None, "host-a-4242"), ("  ", "host-a-4242")],
)
def test_the_replica_id_is_the_configured_one_else_host_and_pid(
    configured: str | None, expected: str
) -> None:
    assert replica_id(configured, hostname="host-a", pid=4242) == expected


def test_the_watched_services_are_in_config_order() -> None:
    assert watched_services(_config()) == [B, A]


def test_a_sqlite_state_is_owned_by_its_one_process(tmp_path: Path) -> None:
    ownership = make_ownership(
        _config(path=str(tmp_path / "s.db")), MemoryStore(), None, "host-a-1"
    )
    assert isinstance(ownership, SoleOwner) and ownership.replica == "host-a-1"
    assert ownership.owns(A) and ownership.reachable


def test_a_postgres_state_without_its_fence_is_refused() -> None:
    config = _config(url="postgresql://poller:pw@127.0.0.1:5432/poller")
    with pytest.raises(ConfigError, match="needs its fence") as caught:
        make_ownership(config, MemoryStore(), None, "host-a-1")
    assert "pw" not in str(caught.value)
