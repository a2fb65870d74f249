"""The state contract, what else the state keeps: session fingerprints, pruning, Slack threads,
sink pacing, the summary, and closing.

Every test runs on every backend (``conftest.BACKENDS``) through the public interface only.
"""

from __future__ import annotations

import json

import pytest

from poller.errors import StateError
from poller.state.base import StateStore
from poller.state.models import StoredSession
from poller.state.views import SessionCounts
from poller.twilio.records import Fingerprint
from tests.state.cases import (
    CLOSED,
    FP,
    OPEN,
    SERVICE,
    SESSION_A,
    SESSION_B,
    SESSION_C,
    enqueue,
    ids_of,
    make_event,
    session_of,
)

# ---- session fingerprints ------------------------------------------------------------------


async def test_session_fingerprints_are_stored_by_commits_and_watches(store: StateStore) -> None:
    assert await store.session_fingerprint(SESSION_A) is None
    await store.begin_watch(SERVICE, [SESSION_A, SESSION_B], 1.0, fingerprints={SESSION_A: OPEN})
    assert await store.session_fingerprint(SESSION_A) == StoredSession(OPEN, 1.0)
    assert await store.session_fingerprint(SESSION_B) is None
    await store.commit_unchanged(SERVICE, SESSION_A, now=2.0)  # none given: kept
    assert await store.session_fingerprint(SESSION_A) == StoredSession(OPEN, 1.0)
    await store.commit_unchanged(SERVICE, SESSION_A, now=3.0, session_fingerprint=OPEN)
    assert await store.session_fingerprint(SESSION_A) == StoredSession(OPEN, 3.0)  # read again
    await store.commit_poll(
        SERVICE, SESSION_B, fetched={}, events=[], now=4.0, session_fingerprint=CLOSED
    )
    stored = await store.session_fingerprint(SESSION_B)
    assert stored == StoredSession(CLOSED, 4.0)
    assert stored is not None and stored.fingerprint.closed_reason == "api"


# ---- pruning -------------------------------------------------------------------------------


async def test_prune_forgets_sessions_gone_past_grace_with_nothing_pending(
    store: StateStore,
) -> None:
    old_idle, old_busy, recent, active = (f"KC{c * 32}" for c in "1234")
    for sid in (old_idle, old_busy, recent, active):
        await store.commit_poll(SERVICE, sid, fetched={"KI1": FP, "KI2": FP}, events=[], now=1.0)
        await store.set_thread_ts("slack", sid, "1700000000.000100")
    await enqueue(store, old_busy, [make_event(old_busy, 1)], ["ops"], now=1.0)
    await store.mark_session_gone(old_idle, 10.0)
    await store.mark_session_gone(old_busy, 10.0)
    await store.mark_session_gone(recent, 95.0)

    assert await store.prune(now=100.0, grace_seconds=50.0) == 1
    assert await session_of(store, old_idle) is None
    assert await store.known(old_idle) == {}
    assert await store.thread_ts("slack", old_idle) is None
    assert {s.session_sid for s in await store.sessions()} == {old_busy, recent, active}
    assert (await store.summary(now=100.0)).interactions_tracked == 2 * 3 + 1

    await store.ack(ids_of(await store.due("ops", None, 10)))
    assert await store.prune(now=100.0, grace_seconds=50.0) == 1
    assert {s.session_sid for s in await store.sessions()} == {recent, active}
    assert await store.prune(now=100.0, grace_seconds=50.0) == 0
    assert await store.thread_ts("slack", recent) == "1700000000.000100"


async def test_prune_waits_out_a_dead_letter_only_as_long_as_pending(store: StateStore) -> None:
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops"], now=1.0)
    await store.mark_session_gone(SESSION_A, 2.0)
    [head] = await store.due("ops", None, 1)
    await store.dead_letter(head.id, error="400", status=400, now=3.0)
    assert await store.prune(now=100.0, grace_seconds=10.0) == 1  # dead rows do not hold it
    assert [d.id for d in await store.dead_letters()] == [head.id]  # and are kept
    assert await store.session_fingerprint(SESSION_A) is None


async def test_prune_forgets_the_session_fingerprint_too(store: StateStore) -> None:
    await store.commit_poll(
        SERVICE, SESSION_A, fetched={}, events=[], now=1.0, session_fingerprint=CLOSED
    )
    await store.mark_session_gone(SESSION_A, 1.0)
    assert await store.prune(now=5.0, grace_seconds=1.0) == 1
    assert await store.session_fingerprint(SESSION_A) is None
    await store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=6.0)
    assert await store.session_fingerprint(SESSION_A) is None  # a new start, not the old one


# ---- threads and pacing --------------------------------------------------------------------


async def test_thread_ts_is_kept_per_sink_and_session(store: StateStore) -> None:
    assert await store.thread_ts("slack", SESSION_A) is None
    await store.set_thread_ts("slack", SESSION_A, "1.1")
    await store.set_thread_ts("slack", SESSION_A, "2.2")
    await store.set_thread_ts("other", SESSION_A, "3.3")
    assert await store.thread_ts("slack", SESSION_A) == "2.2"
    assert await store.thread_ts("other", SESSION_A) == "3.3"
    assert await store.thread_ts("slack", SESSION_B) is None


async def test_sink_pace_is_kept_per_sink_and_replaced(store: StateStore) -> None:
    assert await store.sink_pace("slack") is None
    await store.set_sink_pace("slack", not_before=10.0, now=1.0)
    await store.set_sink_pace("slack", not_before=20.0, now=2.0)
    await store.set_sink_pace("teams", not_before=5.0, now=3.0)
    assert await store.sink_pace("slack") == (20.0, 2.0)
    assert await store.sink_pace("teams") == (5.0, 3.0)
    assert await store.sink_pace("discord") is None


# ---- summary and closing -------------------------------------------------------------------


async def test_summary_reports_sessions_interactions_outbox_and_watches(
    store: StateStore,
) -> None:
    await store.begin_watch(SERVICE, [], 1.0)
    await store.commit_poll(SERVICE, SESSION_A, fetched={"KI1": FP, "KI2": FP}, events=[], now=1.0)
    await store.ensure_session(SERVICE, SESSION_B, new_traffic=True, now=1.0)
    await store.record_failure(SESSION_B, "503", 2.0)
    await store.commit_poll(SERVICE, SESSION_C, fetched={"KI3": FP}, events=[], now=1.0)
    await store.mark_session_gone(SESSION_C, 3.0)
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops", "slack"], now=10.0)
    await enqueue(store, SESSION_A, [make_event(SESSION_A, 2)], ["ops"], now=20.0)
    [head] = await store.due("slack", None, 1)
    await store.dead_letter(head.id, error="400", status=400, now=21.0)
    await store.record_sink_disabled("ops", status=404, reason="webhook\ndeleted", now=22.0)
    await store.record_sink_disabled("ops", status=404, reason="webhook deleted", now=24.0)

    summary = (await store.summary(now=25.0)).to_json()
    assert {key: summary[key] for key in ("sessions", "interactions_tracked", "outbox")} == {
        "sessions": {"watched": 2, "baselined": 1, "gone": 1, "failing": 1},
        "interactions_tracked": 2 + 2 + 1,  # KI1, KI2, two enqueued, KI3
        "outbox": {
            "pending": {"ops": 2},
            "dead": {"slack": 1},
            "oldest_pending_age_seconds": 15.0,
            "disabled": {"ops": {"since": 22.0, "status": 404, "reason": "webhook deleted"}},
        },
    }
    assert summary["watches"] == [{"service_sid": SERVICE, "started_at": 1.0}]


async def test_empty_summary_has_no_oldest_age(store: StateStore) -> None:
    summary = await store.summary()
    assert summary.outbox.to_json() == {
        "pending": {},
        "dead": {},
        "oldest_pending_age_seconds": None,
        "disabled": {},
    }
    assert (summary.sessions, summary.interactions_tracked, summary.watches) == (
        SessionCounts(watched=0, baselined=0, gone=0, failing=0),
        0,
        (),
    )


async def test_summary_names_its_backend_and_prints_as_json(
    store: StateStore, backend: str
) -> None:
    await store.begin_watch(SERVICE, [SESSION_A], 1.0)
    summary = await store.summary(now=2.0)
    assert (summary.backend, summary.location) == (backend, store.location)
    assert summary.location and isinstance(summary.schema_version, int)
    printed = json.loads(json.dumps(summary.to_json()))
    assert (printed["backend"], printed["path"]) == (backend, store.location)
    assert printed["watches"] == [{"service_sid": SERVICE, "started_at": 1.0}]


async def test_closed_store_raises_state_error(store: StateStore) -> None:
    await store.close()
    with pytest.raises(StateError):
        await store.pending_count()
    with pytest.raises(StateError):
        await store.known(SESSION_A)
    await store.close()  # closing twice is harmless


async def test_fingerprints_come_back_as_fingerprints(store: StateStore) -> None:
    plain = ("2026-11-27T10:00:00Z", None, "sent")
    await store.commit_poll(
        SERVICE,
        SESSION_A,
        fetched={"KI1": Fingerprint(*plain)},
        events=[],
        now=1.0,
    )
    [(sid, fingerprint)] = (await store.known(SESSION_A)).items()
    assert (sid, fingerprint.outbound_resource_status) == ("KI1", "sent")
    assert isinstance(fingerprint, Fingerprint)
