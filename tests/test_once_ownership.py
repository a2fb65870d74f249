"""``poller once`` with an ownership: one round, only owned Services, released at the end."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from structlog.testing import capture_logs

from poller.app import build_app
from poller.config import Config, parse_config
from poller.once import run_once
from poller.state.memory.store import MemoryStore
from tests.fake_ownership import FakeOwnership
from tests.sink_contract_cases import make_event
from tests.test_daemon_ownership import Twilio

MINE = "KS" + "a" * 32
THEIRS = "KS" + "b" * 32


def _config() -> Config:
    return parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
            "watch": [
                {"service_sid": MINE, "all_sessions": True},
                {"service_sid": THEIRS, "all_sessions": True},
            ],
            # Nothing listens there: a delivery attempted would fail and be counted.
            "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        },
        {},
    )


async def _once(store: MemoryStore, ownership: FakeOwnership, twilio: Twilio) -> int:
    config = _config()
    app = await build_app(config, store, twilio_transport=twilio.transport(), owns=ownership.owns)
    try:
        return await run_once(app, ownership)
    finally:
        await app.client.aclose()  # the store stays open, for the test to read
        for sink in app.sinks:
            await sink.aclose()


async def test_once_polls_only_what_it_owns_and_releases_it_at_the_end() -> None:
    store, twilio = MemoryStore(), Twilio()
    ownership = FakeOwnership(owned=[MINE])
    with capture_logs() as logs:
        code = await _once(store, ownership, twilio)
    assert code == 0  # a Service owned by another replica is not a failure of this run
    assert set(twilio.services) == {MINE}
    assert ownership.calls == [("start", [MINE, THEIRS]), ("stop",)]
    (said,) = [e for e in logs if e["event"] == "services_not_owned"]
    assert said["service_sids"] == [THEIRS] and said["reason"] == "owned by another replica"
    (finished,) = [e for e in logs if e["event"] == "once_finished"]
    assert finished["not_owned"] == [THEIRS]


async def test_once_leaves_another_replicas_deliveries_untouched() -> None:
    store, twilio = MemoryStore(), Twilio()
    theirs: Any = replace(make_event(), service_sid=THEIRS)
    await store.commit_poll(
        THEIRS, theirs.session_sid, fetched={}, events=[(theirs, ["ops"])], now=1.0
    )
    with capture_logs() as logs:
        code = await _once(store, FakeOwnership(owned=[MINE]), twilio)
    (row,) = await store.due("ops", None, 10)
    assert row.event.id == theirs.id and row.attempts == 0  # never attempted here
    (finished,) = [e for e in logs if e["event"] == "once_finished"]
    assert finished["deliveries_not_owned"] == 1 and finished["delivered"] == 0
    assert code == 1  # still pending in the shared outbox (the owner delivers it)


async def test_once_without_an_ownership_owns_everything() -> None:
    store, twilio = MemoryStore(), Twilio()
    config = _config()
    app = await build_app(config, store, twilio_transport=twilio.transport())
    try:
        code = await run_once(app)
    finally:
        await app.aclose()
    assert code == 0 and set(twilio.services) == {MINE, THEIRS}
