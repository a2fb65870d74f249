"""``cli`` composes a replica: its id, the fence the daemon's store writes under, the ownership.

``open_store`` and the lease keeper are stood in for (a memory state, ``FakeOwnership``), so
these tests read what ``cli`` hands them; SQLite is the real file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from poller import cli
from poller.arguments import build_parser
from poller.config import Config, parse_config
from poller.errors import ConfigError, StateError
from poller.replicas.base import Ownership, SoleOwner
from poller.state.base import StateStore
from poller.state.memory.store import MemoryStore
from poller.state.sqlite.store import SqliteStore
from tests.fake_ownership import FakeOwnership

PG_URL = "postgresql://poller:pw@127.0.0.1:5432/poller"


def _config(state: dict[str, Any]) -> Config:
    return parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
            "state": state,
            "watch": [{"service_sid": "KS" + "a" * 32, "all_sessions": True}],
            "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        },
        {},
    )


class Opened:
    """``open_store``'s stand-in: records how it was asked, hands out a memory state."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.store = MemoryStore()

    async def __call__(self, state: Any, **kwargs: Any) -> StateStore:
        self.asked.append({"state": state, **kwargs})
        return self.store


async def test_a_postgres_replica_opens_its_store_under_its_fence_and_its_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from poller.state.postgres.fence import Fence

    monkeypatch.setenv("POLLER_REPLICA_ID", "web-7")
    opened = Opened()
    made: dict[str, Any] = {}

    def make(config: Config, store: StateStore, fence: Any, replica: str, **_: Any) -> Ownership:
        made.update(store=store, fence=fence, replica=replica)
        return FakeOwnership(replica=replica)

    monkeypatch.setattr("poller.state.open.open_store", opened)
    monkeypatch.setattr("poller.replicas.open.make_ownership", make)
    store, ownership = await cli._open_owned(_config({"url": PG_URL}))
    (asked,) = opened.asked
    assert isinstance(asked["fence"], Fence) and asked["fence"].replica == "web-7"
    assert asked["application_name"] == "poller:web-7"  # the replica, in pg_stat_activity
    assert made == {"store": opened.store, "fence": asked["fence"], "replica": "web-7"}
    assert store is opened.store and ownership.replica == "web-7"


async def test_the_store_is_closed_when_no_ownership_can_be_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Ownership:
        raise ConfigError("several replicas need the lease keeper")

    opened = Opened()
    monkeypatch.setattr("poller.state.open.open_store", opened)
    monkeypatch.setattr("poller.replicas.open.make_ownership", refuse)
    with pytest.raises(ConfigError):
        await cli._open_owned(_config({"url": PG_URL}))
    with pytest.raises(StateError, match="closed"):
        await opened.store.pending_count()


async def test_an_operator_command_opens_the_state_without_a_fence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = Opened()
    monkeypatch.setattr("poller.state.open.open_store", opened)
    monkeypatch.setattr(cli, "_load", lambda _args: _config({"url": PG_URL}))
    args = build_parser().parse_args(["state", "show", "-c", "unused.yaml"])
    await cli._open_store(args)
    (asked,) = opened.asked
    assert asked.get("fence") is None and asked["shared"] is True


async def test_a_sqlite_poller_is_its_states_sole_owner_named_by_host_and_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLLER_REPLICA_ID", raising=False)
    monkeypatch.setattr("socket.gethostname", lambda: "box")
    monkeypatch.setattr("os.getpid", lambda: 99)
    store, ownership = await cli._open_owned(_config({"path": str(tmp_path / "state.db")}))
    try:
        assert isinstance(store, SqliteStore)
        assert isinstance(ownership, SoleOwner) and ownership.replica == "box-99"
    finally:
        await store.close()
