"""Crash safety with real processes: SIGKILL between fetch, commit, delivery and ack."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.lab.receiver import ReceiverThread
from poller.lab.simulator import SimulatorThread
from poller.state.sqlite.store import SqliteStore
from tests.support import run_poller, seeded_simulator, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(5, sessions=2, per_session=1) as running:
        yield running


def _crash_once(config: str, point: str) -> int:
    os.environ["POLLER_CRASH_AT"] = point
    try:
        return run_poller("once", "-c", config).returncode
    finally:
        del os.environ["POLLER_CRASH_AT"]


def _pending(folder: Path) -> int:
    return asyncio.run(_pending_async(folder))


async def _pending_async(folder: Path) -> int:
    async with SqliteStore.open(folder / "state.db", shared=True) as store:
        return await store.pending_count()


@pytest.mark.parametrize("point", ["after_fetch", "after_commit", "after_send", "after_ack"])
def test_sigkill_at_each_point_redelivers_every_event_with_the_same_id(
    sim: SimulatorThread, receiver: ReceiverThread, tmp_path: Path, point: str
) -> None:
    config = str(write_config(tmp_path, sim, receiver.base_url))
    assert run_poller("once", "-c", config).returncode == 0
    s = sim.simulator
    service = s.service_sids()[0]
    first, second = sorted(s.session_sids(service))
    changed = s.interaction_sids(first)[0]
    new = [s.add_interaction(service, sid, body="x")["sid"] for sid in (first, second, second)]
    s.set_status(changed, outbound="undelivered")

    assert _crash_once(config, point) == -signal.SIGKILL
    before = len(receiver.received())
    pending_at_crash = _pending(tmp_path)
    restarted = run_poller("once", "-c", config)
    assert restarted.returncode == 0, restarted.stderr

    received = receiver.received()
    ids_by_event: dict[tuple[str, str], set[str]] = defaultdict(set)
    for item in received:
        ids_by_event[(item.event_type, item.body["data"]["interaction"]["sid"])].add(
            item.webhook_id
        )
    assert set(ids_by_event) == {("interaction.created", sid) for sid in new} | {
        ("interaction.updated", changed)
    }
    assert all(len(ids) == 1 for ids in ids_by_event.values()), ids_by_event
    if point == "after_send":
        # Killed before any ack: whatever the receiver accepted came again, under its id.
        assert before >= 1 and pending_at_crash == 4 and len(received) == 4 + before
    elif point == "after_ack":
        # Killed after the first batch's ack: what it acked never came again; every other
        # accepted event did.
        acked = 4 - pending_at_crash
        assert 1 <= acked <= before and len(received) == 4 + before - acked
    else:
        assert before == 0 and len(received) == 4
    assert run_poller("once", "-c", config).returncode == 0
    assert len(receiver.received()) == len(received)
