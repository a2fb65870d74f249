"""The state contract, sessions side: watches, sessions, polls' commits and failures.

Every test runs on every backend (``conftest.BACKENDS``) through the public interface only.
"""

from __future__ import annotations

import pytest

from poller.errors import StateError
from poller.state.base import StateStore
from poller.state.models import SessionState, StoredSession
from poller.state.views import OutboxSummary
from tests.state.cases import (
    CLOSED,
    FP,
    OTHER_SERVICE,
    SERVICE,
    SESSION_A,
    SESSION_B,
    SESSION_C,
    enqueue,
    make_event,
    session_of,
    watched,
)

# ---- watches -------------------------------------------------------------------------------


async def test_a_watch_begins_once_with_its_sessions_and_can_end(store: StateStore) -> None:
    sessions = ["KC" + f"{n:032x}" for n in range(3)]
    assert await store.watch_begun(SERVICE) is None
    assert await store.begin_watch(SERVICE, sessions, 100.0) == 100.0
    assert await store.begin_watch(SERVICE, ["KC" + "f" * 32], 200.0) == 100.0  # begun already
    assert await store.watch_begun(SERVICE) == 100.0
    assert sorted(s.session_sid for s in await store.sessions(SERVICE)) == sessions
    assert all(not s.baselined and not s.new_traffic for s in await store.sessions(SERVICE))
    assert await store.watched_services() == [SERVICE]
    await store.end_watch(SERVICE)
    assert await store.watch_begun(SERVICE) is None and await store.watched_services() == []
    assert await store.begin_watch(SERVICE, [], 300.0) == 300.0  # watching again begins anew


async def test_a_watch_keeps_what_its_listing_showed_of_each_session(store: StateStore) -> None:
    listed = {SESSION_A: ("m-a", "2026-11-27T10:00:00Z"), SESSION_B: ("m-b", None)}
    await store.begin_watch(SERVICE, [SESSION_A, SESSION_B, SESSION_C], 5.0, listed=listed)
    a, b, c = [await watched(store, sid) for sid in (SESSION_A, SESSION_B, SESSION_C)]
    assert (a.watch_listed, a.activity_marker, a.watch_last_interaction) == (
        True,
        "m-a",
        "2026-11-27T10:00:00Z",
    )
    assert (b.watch_listed, b.activity_marker, b.watch_last_interaction) == (True, "m-b", None)
    assert (c.watch_listed, c.activity_marker, c.watch_last_interaction) == (False, None, None)


async def test_a_watch_refused_records_nothing(store: StateStore) -> None:
    with pytest.raises(StateError):
        await store.begin_watch(SERVICE, [SESSION_A], 1.0, fingerprints={SESSION_B: CLOSED})
    assert await store.watch_begun(SERVICE) is None
    assert await store.sessions() == []
    assert await store.session_fingerprint(SESSION_B) is None
    await store.begin_watch(SERVICE, [SESSION_A], 2.0, fingerprints={SESSION_A: CLOSED})
    assert (await store.session_fingerprint(SESSION_A)) == StoredSession(CLOSED, 2.0)


async def test_a_watch_already_begun_changes_no_session(store: StateStore) -> None:
    await store.begin_watch(SERVICE, [SESSION_A], 1.0, listed={SESSION_A: ("m1", None)})
    await store.begin_watch(
        SERVICE, [SESSION_A, SESSION_B], 2.0, listed={SESSION_A: ("m2", "2026-11-27T10:00:00Z")}
    )
    assert [s.session_sid for s in await store.sessions()] == [SESSION_A]
    assert (await watched(store, SESSION_A)).activity_marker == "m1"


async def test_watches_are_listed_in_the_summary_by_service(store: StateStore) -> None:
    await store.begin_watch(OTHER_SERVICE, [], 2.0)
    await store.begin_watch(SERVICE, [], 1.0)
    assert sorted(await store.watched_services()) == [SERVICE, OTHER_SERVICE]
    assert (await store.summary(now=3.0)).watches == ((SERVICE, 1.0), (OTHER_SERVICE, 2.0))


# ---- sessions ------------------------------------------------------------------------------


async def test_ensure_session_creates_once_and_keeps_state(store: StateStore) -> None:
    created = await store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=1.0)
    assert created == SessionState(
        service_sid=SERVICE,
        session_sid=SESSION_A,
        baselined=False,
        new_traffic=True,
        last_success_at=None,
        consecutive_failures=0,
        last_error=None,
        activity_marker=None,
        status=None,
        unsettled_until=None,
    )
    await store.commit_poll(SERVICE, SESSION_A, fetched={}, events=[], now=2.0, status="open")
    again = await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=3.0)
    assert again.new_traffic is True
    assert again.baselined is True
    assert again.status == "open"


async def test_ensure_session_of_a_watched_session_returns_it_unchanged(store: StateStore) -> None:
    await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
    state = await store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=2.0)
    assert (state.session_sid, state.new_traffic) == (SESSION_A, False)
    assert await store.sessions() == [state]


async def test_ensure_session_revives_a_gone_session(store: StateStore) -> None:
    await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
    await store.mark_session_gone(SESSION_A, 5.0)
    await store.mark_session_gone(SESSION_A, 9.0)
    assert (await watched(store, SESSION_A)).gone_at == 5.0  # the first time counts
    revived = await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=10.0)
    assert revived.gone_at is None
    assert (await watched(store, SESSION_A)).gone_at is None


async def test_a_gone_session_can_be_revived(store: StateStore) -> None:
    sid = "KC" + "1" * 32
    await store.ensure_session(SERVICE, sid, new_traffic=False, now=10.0)
    await store.mark_session_gone(sid, 20.0)
    assert await store.watched_count() == 0
    await store.revive_session(sid)
    assert (await watched(store, sid)).gone_at is None
    assert await store.watched_count() == 1


async def test_sessions_lists_by_service_in_sid_order(store: StateStore) -> None:
    await store.ensure_session(SERVICE, SESSION_B, new_traffic=False, now=1.0)
    await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
    await store.ensure_session(OTHER_SERVICE, SESSION_C, new_traffic=False, now=1.0)
    assert [s.session_sid for s in await store.sessions(SERVICE)] == [SESSION_A, SESSION_B]
    assert [s.session_sid for s in await store.sessions()] == [SESSION_A, SESSION_B, SESSION_C]
    assert await session_of(store, "KC" + "0" * 32) is None


async def test_baseline_counts_count_watched_sessions_per_service(store: StateStore) -> None:
    await store.begin_watch(SERVICE, [SESSION_A, SESSION_B], 1.0)
    await store.commit_poll(SERVICE, SESSION_A, fetched={}, events=[], now=2.0)
    await store.commit_poll(OTHER_SERVICE, SESSION_C, fetched={}, events=[], now=2.0)
    assert await store.baseline_counts() == (2, 1)
    assert await store.baseline_counts(SERVICE) == (1, 1)
    assert await store.baseline_counts(OTHER_SERVICE) == (1, 0)
    await store.mark_session_gone(SESSION_B, 3.0)  # gone sessions are not counted
    assert await store.baseline_counts(SERVICE) == (1, 0)
    assert await store.watched_count() == 2


# ---- a poll's commit -----------------------------------------------------------------------


async def test_commit_poll_adds_fetched_to_the_known_set_and_forgets_nothing(
    store: StateStore,
) -> None:
    first = {f"KI{n}": FP for n in range(5)}
    await store.commit_poll(SERVICE, SESSION_A, fetched=first, events=[], now=1.0)
    changed = FP._replace(outbound_resource_status="read")
    second = {"KI0": FP, "KI1": changed, "KI9": FP}
    await store.commit_poll(
        SERVICE,
        SESSION_A,
        fetched=second,
        events=[],
        now=2.0,
        activity_marker="m1",
        status="in-progress",
        unsettled_until=99.0,
    )
    assert await store.known(SESSION_A) == {**first, **second}
    state = await watched(store, SESSION_A)
    assert (state.baselined, state.last_success_at, state.activity_marker) == (True, 2.0, "m1")
    assert (state.status, state.unsettled_until) == ("in-progress", 99.0)


async def test_known_sets_are_kept_per_session(store: StateStore) -> None:
    await store.commit_poll(SERVICE, SESSION_A, fetched={"KI1": FP}, events=[], now=1.0)
    await store.commit_poll(SERVICE, SESSION_B, fetched={"KI2": FP}, events=[], now=1.0)
    assert await store.known(SESSION_A) == {"KI1": FP}
    assert await store.known(SESSION_B) == {"KI2": FP}
    assert await store.known(SESSION_C) == {}
    known = await store.known(SESSION_A)
    known["KI9"] = FP  # the caller's copy: the store is not changed through it
    assert await store.known(SESSION_A) == {"KI1": FP}


async def test_commit_poll_given_the_known_set_merges_it_with_fetched(store: StateStore) -> None:
    first = {f"KI{n}": FP for n in range(5)}
    await store.commit_poll(SERVICE, SESSION_A, fetched=first, events=[], now=1.0)
    second = {"KI0": FP._replace(inbound_resource_status="failed"), "KI1": FP, "KI7": FP}
    known = await store.known(SESSION_A)
    event = make_event(SESSION_A, 7)
    await store.commit_poll(
        SERVICE, SESSION_A, fetched=second, events=[(event, ["ops"])], now=2.0, known=known
    )
    assert await store.known(SESSION_A) == {**first, **second}
    assert [d.event.id for d in await store.due("ops", None, 10)] == [event.id]


async def test_commit_unchanged_records_the_session_only(store: StateStore) -> None:
    known = {f"KI{n}": FP for n in range(5)}
    await store.commit_poll(SERVICE, SESSION_A, fetched=known, events=[], now=1.0)
    await store.record_failure(SESSION_A, "TransientSourceError: 503", 2.0)
    await store.commit_unchanged(
        SERVICE, SESSION_A, now=3.0, activity_marker="m2", status="open", unsettled_until=9.0
    )
    assert await store.known(SESSION_A) == known
    state = await watched(store, SESSION_A)
    assert (state.baselined, state.consecutive_failures, state.last_success_at) == (True, 0, 3.0)
    assert (state.activity_marker, state.status, state.unsettled_until) == ("m2", "open", 9.0)
    assert await store.pending_count() == 0


async def test_commit_unchanged_of_a_new_session_baselines_it(store: StateStore) -> None:
    await store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=1.0)
    await store.commit_unchanged(SERVICE, SESSION_A, now=2.0)
    state = await watched(store, SESSION_A)
    assert (state.baselined, state.new_traffic, state.last_success_at) == (True, True, 2.0)
    assert await store.known(SESSION_A) == {}


async def test_commit_poll_of_an_untracked_session_tracks_it(store: StateStore) -> None:
    await store.commit_poll(SERVICE, SESSION_A, fetched={"KI1": FP}, events=[], now=4.0)
    state = await watched(store, SESSION_A)
    assert (state.service_sid, state.baselined, state.new_traffic) == (SERVICE, True, False)
    assert (state.last_success_at, state.gone_at) == (4.0, None)


async def test_commit_poll_resets_failures(store: StateStore) -> None:
    await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
    await store.record_failure(SESSION_A, "TransientSourceError: 503\n  from Twilio", 2.0)
    await store.record_failure(SESSION_A, "x" * 5000, 3.0)
    failing = await watched(store, SESSION_A)
    assert failing.consecutive_failures == 2
    assert failing.last_failure_at == 3.0
    assert failing.last_error is not None
    assert len(failing.last_error) <= 300
    await store.record_failure(SESSION_A, "TransientSourceError: 503\n  from Twilio", 4.0)
    assert (await watched(store, SESSION_A)).last_error == "TransientSourceError: 503 from Twilio"
    await store.commit_poll(SERVICE, SESSION_A, fetched={}, events=[], now=5.0)
    recovered = await watched(store, SESSION_A)
    assert (recovered.consecutive_failures, recovered.last_success_at) == (0, 5.0)
    assert recovered.last_failure_at == 4.0  # when it last failed stays known


async def test_a_failure_of_an_unknown_session_is_ignored(store: StateStore) -> None:
    await store.record_failure(SESSION_A, "503", 1.0)
    await store.mark_session_gone(SESSION_A, 1.0)
    await store.revive_session(SESSION_A)
    assert await store.sessions() == []


@pytest.mark.parametrize(
    "bad_sinks",
    [["ops", None], "ops"],
    ids=["constraint-error", "str-instead-of-list"],
)
async def test_commit_poll_failure_rolls_back_everything(
    store: StateStore, bad_sinks: object
) -> None:
    first = make_event(SESSION_A, 1)
    await store.commit_poll(
        SERVICE, SESSION_A, fetched={"KI1": FP}, events=[(first, ["ops"])], now=1.0
    )
    before_session = await session_of(store, SESSION_A)
    good, bad = make_event(SESSION_A, 2), make_event(SESSION_A, 3)
    with pytest.raises((StateError, TypeError)):
        await store.commit_poll(
            SERVICE,
            SESSION_A,
            fetched={"KI2": FP, "KI3": FP},
            events=[(good, ["ops", "slack"]), (bad, bad_sinks)],  # type: ignore[list-item]
            now=2.0,
            status="closed",
            session_fingerprint=CLOSED,
        )
    assert await store.known(SESSION_A) == {"KI1": FP}
    assert await session_of(store, SESSION_A) == before_session
    assert await store.session_fingerprint(SESSION_A) is None
    assert [d.event.id for d in await store.due("ops", None, 10)] == [first.id]
    assert await store.due("slack", None, 10) == []
    assert await store.pending_count() == 1
    await store.commit_poll(SERVICE, SESSION_A, fetched={"KI2": FP}, events=[], now=3.0)  # usable
    assert await store.known(SESSION_A) == {"KI1": FP, "KI2": FP}


async def test_recommitting_the_same_events_adds_nothing(store: StateStore) -> None:
    events = [make_event(SESSION_A, 1), make_event(SESSION_A, 2, updated=True)]
    for now in (1.0, 2.0):
        await store.commit_poll(
            SERVICE,
            SESSION_A,
            fetched={"KI1": FP, "KI2": FP},
            events=[(e, ["ops", "slack"]) for e in events],
            now=now,
        )
    assert await store.pending_count() == 4
    for event in events:  # the session's queue holds each event once, in order
        [head] = await store.due("ops", None, 10)
        assert (head.event, head.enqueued_at) == (event, 1.0)
        await store.ack([head.id])
    assert await store.due("ops", None, 10) == []


async def test_a_recommitted_event_gains_only_the_sinks_it_lacked(store: StateStore) -> None:
    event = make_event(SESSION_A, 1)
    await enqueue(store, SESSION_A, [event], ["ops"], now=1.0)
    await enqueue(store, SESSION_A, [event], ["ops", "slack"], now=2.0)
    [ops] = await store.due("ops", None, 10)
    [slack] = await store.due("slack", None, 10)
    assert (ops.enqueued_at, slack.enqueued_at) == (1.0, 2.0)
    assert slack.event == event


async def test_event_without_sinks_is_not_stored(store: StateStore) -> None:
    await store.commit_poll(
        SERVICE, SESSION_A, fetched={"KI1": FP}, events=[(make_event(SESSION_A, 1), [])], now=1.0
    )
    assert await store.pending_count() == 0
    assert (await store.summary(now=2.0)).outbox == OutboxSummary({}, {}, None, ())
