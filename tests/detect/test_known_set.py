"""The known set never forgets an interaction one listing lacked; an event id never changes content.

These drive the real poll (``SessionPoller``) over a real SQLite ``Store``: the diff, the
unchanged shortcut and ``commit_poll`` together, as ``poller once`` and the daemon run them.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from poller.config import PollConfig
from poller.events import Event, EventType
from poller.state.sqlite.store import SqliteStore
from poller.twilio.records import Fingerprint, Interaction
from poller.watch.poll import SessionPoller
from tests.detect.oracle import apply, known_after

FirstRun = Literal["baseline", "notify_all"]
SERVICE = "KS" + "a" * 32
SESSION = "KC" + "a" * 32
SIDS = [f"KI{c * 32}" for c in "abc"]
# Few values, so that listings often repeat, regress and come back to an earlier fingerprint.
FINGERPRINTS = [
    Fingerprint("2026-11-27T10:00:00Z", "received", "sent"),
    Fingerprint("2026-11-27T10:00:05Z", "received", "delivered"),
    Fingerprint("2026-11-27T10:00:05Z", "received", "failed"),
    Fingerprint(None, None, None),
]


@dataclass(frozen=True)
class AllEvents:
    name: str = "ops"
    events: tuple[str, ...] = ("interaction.created", "interaction.updated")
    filter: None = None
    include_data: bool = True


class ScriptedSource:
    """Answers each poll with the next listing of a script."""

    def __init__(self, listings: Sequence[Sequence[Interaction]]) -> None:
        self._listings = list(listings)

    async def list_interactions(self, service_sid: str, session_sid: str) -> list[Interaction]:
        return list(self._listings.pop(0))


def record(sid: str, fp: Fingerprint) -> Interaction:
    # Every field besides the fingerprint is a function of the sid, as it is at Twilio.
    raw = {
        "sid": sid,
        "session_sid": SESSION,
        "service_sid": SERVICE,
        "type": "message",
        "data": json.dumps({"body": f"hello from {sid[-4:]}"}),
        "date_created": "2026-11-27T09:00:00Z",
        "date_updated": fp.date_updated,
        "inbound_resource_status": fp.inbound_resource_status,
        "outbound_resource_status": fp.outbound_resource_status,
    }
    built = Interaction.from_api(raw)
    assert built is not None
    return built


def run_polls(
    listings: Sequence[Sequence[Interaction]], first_run: FirstRun = "notify_all"
) -> tuple[list[list[Event]], dict[str, Fingerprint]]:
    """Poll one session once per listing; return the events each poll sent, and the known set."""
    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(_run_polls(Path(folder), listings, first_run))


async def _run_polls(
    folder: Path, listings: Sequence[Sequence[Interaction]], first_run: FirstRun
) -> tuple[list[list[Event]], dict[str, Fingerprint]]:
    async with SqliteStore.open(folder / "s.db") as store:
        # The records are years older than the clock: none is left to settle.
        settings_ = PollConfig(first_run=first_run, timeout_seconds=5.0)
        poller = SessionPoller(
            ScriptedSource(listings), store, settings_, [AllEvents()], clock=lambda: 2e9
        )
        sent: list[list[Event]] = []
        for _ in listings:
            outcome = await poller.poll(SERVICE, SESSION)
            assert outcome.ok
            sent.append(await drain(store))
        return sent, await store.known(SESSION)


async def drain(store: SqliteStore) -> list[Event]:
    """Deliver (ack) everything pending, in the outbox's order."""
    events: list[Event] = []
    while due := await store.due("ops", None, 100):
        events += [delivery.event for delivery in due]
        await store.ack([delivery.id for delivery in due])
    return events


def payload(event: Event) -> str:
    return json.dumps(event.payload(), sort_keys=True)


def test_an_interaction_missing_from_one_listing_comes_back_as_an_update() -> None:
    sent_ki1 = record(SIDS[0], FINGERPRINTS[0])
    delivered_ki1 = record(SIDS[0], FINGERPRINTS[1])
    ki2 = record(SIDS[1], FINGERPRINTS[0])

    sent, known = run_polls([[sent_ki1, ki2], [ki2], [delivered_ki1, ki2]])

    summary = [[(e.type, e.interaction_sid) for e in poll] for poll in sent]
    assert summary == [
        [(EventType.CREATED, SIDS[0]), (EventType.CREATED, SIDS[1])],
        [],
        [(EventType.UPDATED, SIDS[0])],
    ]
    (update,) = sent[2]
    assert update.changes == {
        "date_updated": ("2026-11-27T10:00:00Z", "2026-11-27T10:00:05Z"),
        "outbound_resource_status": ("sent", "delivered"),
    }
    assert update.id != sent[0][0].id
    assert known == {SIDS[0]: FINGERPRINTS[1], SIDS[1]: FINGERPRINTS[0]}


def test_an_empty_listing_forgets_nothing() -> None:
    listed = [record(sid, FINGERPRINTS[0]) for sid in SIDS]
    sent, known = run_polls([listed, [], listed], first_run="baseline")
    assert sent == [[], [], []]
    assert known == known_after(listed)


listings = st.lists(
    st.tuples(st.sampled_from(SIDS), st.sampled_from(FINGERPRINTS)).map(lambda t: record(*t)),
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(listings, min_size=1, max_size=7), st.sampled_from(["baseline", "notify_all"]))
def test_over_any_listings_with_gaps_an_id_never_carries_two_contents(
    script: list[list[Interaction]], first_run: FirstRun
) -> None:
    sent, known = run_polls(script, first_run)

    contents: dict[str, str] = {}
    for event in (e for poll in sent for e in poll):
        assert contents.setdefault(event.id, payload(event)) == payload(event), event.id
    created = [e.interaction_sid for poll in sent for e in poll if e.type is EventType.CREATED]
    assert len(created) == len(set(created))

    # Never forgotten: every sid ever listed stays known, at the fingerprint it last changed to.
    seen: dict[str, Fingerprint] = {}
    for listing in script:
        seen.update(known_after(listing))
    assert known == seen

    # Receivers that replay what they got rebuild exactly that state (after the baseline).
    start: dict[str, Any] = {} if first_run == "notify_all" else known_after(script[0])
    assert apply(start, [e for poll in sent for e in poll]) == known
