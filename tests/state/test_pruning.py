"""The pruning job: gone sessions and kept events go, each logged only when something went."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from poller.config import Config, parse_config
from poller.state.history import Attempt
from poller.state.memory.store import MemoryStore
from poller.state.pruning import prune_state
from tests.sink_contract_cases import make_event

T0 = 1_795_000_000.0
SERVICE = "KS" + "a" * 32
DAY = 86400.0


def _config(**delivery: Any) -> Config:
    return parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
            "state": {"path": "unused.db"},
            "delivery": delivery,
            "watch": [{"service_sid": SERVICE, "all_sessions": True}],
            "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        },
        {},
    )


async def _delivered(store: MemoryStore, at: float) -> str:
    event = make_event()
    await store.commit_poll(
        SERVICE, event.session_sid, fetched={}, events=[(event, ["ops"])], now=at
    )
    (delivery,) = await store.due("ops", None, 10)
    await store.ack([delivery.id], history=[Attempt(delivery.id, at, 0.01, "delivered")])
    return event.id


async def test_history_past_its_keep_is_pruned_and_logged_with_the_count() -> None:
    store = MemoryStore()
    await _delivered(store, T0)
    await _delivered(store, T0 + DAY)
    config = _config(history_seconds=2 * DAY)

    with capture_logs() as logs:
        assert await prune_state(store, config, T0 + 2 * DAY - 1) == (0, 0)
    assert [e for e in logs if e["event"] == "history_pruned"] == []

    with capture_logs() as logs:
        assert await prune_state(store, config, T0 + 2 * DAY + 1) == (0, 1)
    (entry,) = [e for e in logs if e["event"] == "history_pruned"]
    assert entry["events"] == 1
    assert await store.kept_events() == 1


async def test_the_default_keep_is_seven_days() -> None:
    store = MemoryStore()
    await _delivered(store, T0)
    assert await prune_state(store, _config(), T0 + 7 * DAY - 1) == (0, 0)
    assert await prune_state(store, _config(), T0 + 7 * DAY + 1) == (0, 1)
