"""One poll of one session (``SessionPoller``): what it reads of the state and what it commits.

The state is a ``MemoryStore`` that notes which of its calls the poll made; what each call
writes is the state contract's business (``tests/state/``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from poller.config import PollConfig
from poller.state.memory.store import MemoryStore
from poller.state.views import HistoryQuery
from poller.twilio.records import Fingerprint, Interaction
from poller.watch.poll import SessionPoller
from tests.detect.oracle import known_after

SERVICE = "KS" + "a" * 32
SESSION_A = "KC" + "a" * 32
FP = Fingerprint("2026-11-27T10:00:00Z", "received", "delivered")


class NotingStore(MemoryStore):
    """A memory store that notes the poll's reads of the known set and its commits."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.given_known: list[bool] = []  # per commit_poll: was the known set handed over?

    async def known(self, session_sid: str) -> dict[str, Fingerprint]:
        self.calls.append("known")
        return await super().known(session_sid)

    async def commit_poll(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append("commit_poll")
        self.given_known.append(kwargs.get("known") is not None)
        await super().commit_poll(*args, **kwargs)

    async def commit_unchanged(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append("commit_unchanged")
        await super().commit_unchanged(*args, **kwargs)


def interaction_record(sid: str, fp: Fingerprint = FP) -> Interaction:
    raw = {
        "sid": sid,
        "session_sid": SESSION_A,
        "service_sid": SERVICE,
        "date_created": "2026-11-27T09:00:00Z",
        "date_updated": fp.date_updated,
        "inbound_resource_status": fp.inbound_resource_status,
        "outbound_resource_status": fp.outbound_resource_status,
    }
    record = Interaction.from_api(raw)
    assert record is not None
    return record


@dataclass(frozen=True)
class AllEvents:
    name: str = "ops"
    events: tuple[str, ...] = ("interaction.created", "interaction.updated")
    filter: None = None
    include_data: bool = True


class ListedSource:
    """Answers every session with the records it currently holds."""

    def __init__(self, records: Sequence[Interaction]) -> None:
        self.records = list(records)

    async def list_interactions(self, service_sid: str, session_sid: str) -> list[Interaction]:
        return list(self.records)


def session_poller(store: MemoryStore, source: ListedSource) -> SessionPoller:
    settings = PollConfig(first_run="baseline", settle_seconds=900.0, timeout_seconds=5.0)
    return SessionPoller(source, store, settings, [AllEvents()], clock=lambda: 1e9)


async def test_poll_of_an_unchanged_session_writes_only_its_session_row() -> None:
    store = NotingStore()
    source = ListedSource([interaction_record(f"KI{n}") for n in range(3)])
    poller = session_poller(store, source)
    assert (await poller.poll(SERVICE, SESSION_A)).ok
    store.calls.clear()
    outcome = await poller.poll(SERVICE, SESSION_A, activity_marker="m1")
    assert (outcome.ok, outcome.events) == (True, 0)
    # the known set, read once to compare; then the session row only
    assert store.calls == ["known", "commit_unchanged"]
    [state] = await store.sessions()
    assert state.activity_marker == "m1"


async def test_poll_of_a_changed_session_commits_its_event() -> None:
    store = NotingStore()
    source = ListedSource([interaction_record("KI1"), interaction_record("KI2")])
    poller = session_poller(store, source)
    await poller.poll(SERVICE, SESSION_A)
    changed = FP._replace(outbound_resource_status="failed")
    source.records[1] = interaction_record("KI2", changed)
    store.calls.clear()
    outcome = await poller.poll(SERVICE, SESSION_A)
    assert outcome.events == 1
    assert store.calls == ["known", "commit_poll"]  # the known set is read once...
    assert store.given_known[-1]  # ...and handed to the commit, not read again
    assert await store.known(SESSION_A) == {"KI1": FP, "KI2": changed}
    assert [d.event.interaction_sid for d in await store.due("ops", None, 10)] == ["KI2"]


async def test_poll_for_sinks_without_data_keeps_no_message_body_in_the_state() -> None:
    store = MemoryStore()
    source = ListedSource([interaction_record("KI1")])
    settings = PollConfig(first_run="notify_all", settle_seconds=900.0, timeout_seconds=5.0)
    sinks = [AllEvents(name="a", include_data=False), AllEvents(name="b", include_data=False)]
    poller = SessionPoller(source, store, settings, sinks, clock=lambda: 1e9)
    source.records = [_with_body(interaction_record("KI1"), "hello there")]
    assert (await poller.poll(SERVICE, SESSION_A)).events == 1
    (delivery,) = await store.due("a", None, 10)
    assert "data" not in delivery.event.interaction
    (kept,) = await store.history(HistoryQuery())
    assert "hello there" not in kept.event.to_json()


def _with_body(record: Interaction, body: str) -> Interaction:
    raw = {**record.raw, "data": json.dumps({"body": body})}
    again = Interaction.from_api(raw)
    assert again is not None
    return again


async def test_poll_listing_a_known_sid_twice_instead_of_another_forgets_nothing() -> None:
    store = MemoryStore()
    source = ListedSource([interaction_record("KI1"), interaction_record("KI2")])
    poller = session_poller(store, source)
    await poller.poll(SERVICE, SESSION_A)
    source.records = [interaction_record("KI1"), interaction_record("KI1")]
    await poller.poll(SERVICE, SESSION_A)
    assert await store.known(SESSION_A) == {"KI1": FP, "KI2": FP}


_fingerprints = st.sampled_from(
    [FP, FP._replace(inbound_resource_status="failed"), Fingerprint(None, None, None)]
)


@given(
    st.dictionaries(st.sampled_from(["KI1", "KI2", "KI3"]), _fingerprints, max_size=3),
    st.lists(st.tuples(st.sampled_from(["KI1", "KI2", "KI3"]), _fingerprints), max_size=4),
)
def test_unchanged_shortcut_is_exactly_a_fetch_that_changes_no_known_fingerprint(
    known: dict[str, Fingerprint], listed: list[tuple[str, Fingerprint]]
) -> None:
    fetched = [interaction_record(sid, fp) for sid, fp in listed]
    unchanged = {**known, **known_after(fetched)} == known
    each_once = len({sid for sid, _ in listed}) == len(listed)
    shortcut = asyncio.run(poll_takes_the_shortcut(known, fetched))
    # Never wrong; exact when each sid is listed once (a sid listed with two fingerprints takes
    # the full path, which decides the winner).
    assert unchanged or not shortcut
    assert shortcut == unchanged or not each_once


async def poll_takes_the_shortcut(
    known: dict[str, Fingerprint], fetched: list[Interaction]
) -> bool:
    """Poll a baselined session knowing ``known`` that lists ``fetched``: was it unchanged?"""
    store = NotingStore()
    await store.commit_poll(SERVICE, SESSION_A, fetched=known, events=[], now=1.0)
    store.calls.clear()
    outcome = await session_poller(store, ListedSource(fetched)).poll(SERVICE, SESSION_A)
    assert outcome.ok
    return store.calls == ["known", "commit_unchanged"]
