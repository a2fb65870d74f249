"""The SQLite state store: file safety, the lock, atomic polls and the ordered outbox."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poller.config import PollConfig
from poller.errors import StateError
from poller.events import Event, EventType, event_id
from poller.state import DeadLetter, Delivery, SessionState, Store, schema
from poller.twilio.records import Fingerprint, Interaction
from poller.watch.poll import SessionPoller

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "KS" + "a" * 32
SESSION_A = "KC" + "a" * 32
SESSION_B = "KC" + "b" * 32
FP = Fingerprint("2026-11-27T10:00:00Z", "received", "delivered")


def make_event(session_sid: str, n: int, *, updated: bool = False) -> Event:
    sid = f"KI{n:032d}"
    fp = Fingerprint(f"2026-11-27T10:{n % 60:02d}:00Z", "received", "sent")
    kind = EventType.UPDATED if updated else EventType.CREATED
    old = Fingerprint(fp.date_updated, "received", "queued") if updated else None
    return Event(
        id=event_id(kind, sid, old, fp),
        type=kind,
        service_sid=SERVICE,
        session_sid=session_sid,
        interaction_sid=sid,
        interaction={"sid": sid, "session_sid": session_sid, "data": '{"body": "hi"}'},
        timestamp=fp.date_updated or "",
        changes={"outbound_resource_status": ("queued", "sent")} if updated else None,
        sort_key=f"{fp.date_updated}|{sid}",
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count_rows(path: Path, table: str) -> int:
    """Count rows through a second connection (WAL lets it read beside the store)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        conn.close()


def enqueue(
    store: Store, session_sid: str, events: Sequence[Event], sinks: Sequence[str], now: float
) -> None:
    fetched = dict(store.known(session_sid))
    fetched.update({e.interaction_sid: FP for e in events})
    store.commit_poll(
        SERVICE, session_sid, fetched=fetched, events=[(e, sinks) for e in events], now=now
    )


def ids_of(deliveries: Sequence[Delivery]) -> list[int]:
    return [d.id for d in deliveries]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    with Store.open(path) as opened:
        yield opened


# ---- sessions and polls --------------------------------------------------------------------


def test_watch_started_at_records_the_first_time_only(store: Store) -> None:
    assert store.watch_started_at(SERVICE, 10.0) == 10.0
    assert store.watch_started_at(SERVICE, 20.0) == 10.0
    assert store.watch_started_at("KS" + "b" * 32, 30.0) == 30.0


def test_ensure_session_creates_once_and_keeps_state(store: Store) -> None:
    created = store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=1.0)
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
    store.commit_poll(SERVICE, SESSION_A, fetched={}, events=[], now=2.0, status="open")
    again = store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=3.0)
    assert again.new_traffic is True
    assert again.baselined is True
    assert again.status == "open"


def test_ensure_session_revives_a_gone_session(store: Store) -> None:
    store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
    store.mark_session_gone(SESSION_A, 5.0)
    store.mark_session_gone(SESSION_A, 9.0)
    gone = store.session(SESSION_A)
    assert gone is not None
    assert gone.gone_at == 5.0
    revived = store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=10.0)
    assert revived.gone_at is None


def test_sessions_lists_by_service_in_sid_order(store: Store) -> None:
    other_service = "KS" + "b" * 32
    store.ensure_session(SERVICE, SESSION_B, new_traffic=False, now=1.0)
    store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
    store.ensure_session(other_service, "KC" + "c" * 32, new_traffic=False, now=1.0)
    assert [s.session_sid for s in store.sessions(SERVICE)] == [SESSION_A, SESSION_B]
    assert len(store.sessions()) == 3
    assert store.session("KC" + "0" * 32) is None


def test_commit_poll_adds_fetched_to_the_known_set_and_forgets_nothing(store: Store) -> None:
    first = {f"KI{n}": FP for n in range(5)}
    store.commit_poll(SERVICE, SESSION_A, fetched=first, events=[], now=1.0)
    changed = FP._replace(outbound_resource_status="read")
    second = {"KI0": FP, "KI1": changed, "KI9": FP}
    store.commit_poll(
        SERVICE,
        SESSION_A,
        fetched=second,
        events=[],
        now=2.0,
        activity_marker="m1",
        status="in-progress",
        unsettled_until=99.0,
    )
    assert store.known(SESSION_A) == {**first, **second}
    state = store.session(SESSION_A)
    assert state is not None
    assert (state.baselined, state.last_success_at, state.activity_marker) == (True, 2.0, "m1")
    assert (state.status, state.unsettled_until) == ("in-progress", 99.0)


def test_commit_poll_writes_only_the_rows_that_changed(store: Store) -> None:
    fetched = {f"KI{n:03d}": FP for n in range(200)}
    store.commit_poll(SERVICE, SESSION_A, fetched=fetched, events=[], now=1.0)
    conn = store._db.conn
    before = conn.total_changes
    store.commit_poll(SERVICE, SESSION_A, fetched=fetched, events=[], now=2.0)
    assert conn.total_changes - before == 1  # the session row only
    fetched = dict(fetched)
    fetched["KI000"] = FP._replace(inbound_resource_status="failed")
    del fetched["KI001"]
    fetched["KI999"] = FP
    before = conn.total_changes
    store.commit_poll(SERVICE, SESSION_A, fetched=fetched, events=[], now=3.0)
    assert conn.total_changes - before == 1 + 2  # one update, one insert; KI001 stays


class StatementLog:
    """The SQL statements the store's connection runs (sqlite3's trace callback)."""

    def __init__(self, store: Store) -> None:
        self.statements: list[str] = []
        self._conn = store._db.conn

    def __enter__(self) -> list[str]:
        self._conn.set_trace_callback(self.statements.append)
        return self.statements

    def __exit__(self, *exc: object) -> None:
        self._conn.set_trace_callback(None)


def interaction_reads(statements: Sequence[str]) -> list[str]:
    return [sql for sql in statements if sql.startswith("SELECT") and "FROM interactions" in sql]


def test_commit_poll_given_the_known_set_does_not_read_it_again(store: Store) -> None:
    first = {f"KI{n}": FP for n in range(5)}
    store.commit_poll(SERVICE, SESSION_A, fetched=first, events=[], now=1.0)
    second = {"KI0": FP._replace(inbound_resource_status="failed"), "KI1": FP, "KI7": FP}
    known = store.known(SESSION_A)
    event = make_event(SESSION_A, 7)
    with StatementLog(store) as statements:
        store.commit_poll(
            SERVICE, SESSION_A, fetched=second, events=[(event, ["ops"])], now=2.0, known=known
        )
    assert interaction_reads(statements) == []
    assert store.known(SESSION_A) == {**first, **second}
    assert [d.event.id for d in store.due("ops", None, 10)] == [event.id]


def test_commit_poll_without_the_known_set_reads_it_in_the_transaction(store: Store) -> None:
    store.commit_poll(SERVICE, SESSION_A, fetched={"KI1": FP}, events=[], now=1.0)
    with StatementLog(store) as statements:
        store.commit_poll(SERVICE, SESSION_A, fetched={"KI2": FP}, events=[], now=2.0)
    assert len(interaction_reads(statements)) == 1
    assert store.known(SESSION_A) == {"KI1": FP, "KI2": FP}


def test_commit_unchanged_writes_the_session_row_only(store: Store, path: Path) -> None:
    known = {f"KI{n}": FP for n in range(5)}
    store.commit_poll(SERVICE, SESSION_A, fetched=known, events=[], now=1.0)
    store.record_failure(SESSION_A, "TransientSourceError: 503", 2.0)
    before = store._db.conn.total_changes
    with StatementLog(store) as statements:
        store.commit_unchanged(
            SERVICE, SESSION_A, now=3.0, activity_marker="m2", status="open", unsettled_until=9.0
        )
    assert store._db.conn.total_changes - before == 1
    assert interaction_reads(statements) == []
    assert store.known(SESSION_A) == known
    state = store.session(SESSION_A)
    assert state is not None
    assert (state.baselined, state.consecutive_failures, state.last_success_at) == (True, 0, 3.0)
    assert (state.activity_marker, state.status, state.unsettled_until) == ("m2", "open", 9.0)
    assert count_rows(path, "events") == 0


def test_commit_unchanged_of_a_new_session_baselines_it(store: Store) -> None:
    store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=1.0)
    store.commit_unchanged(SERVICE, SESSION_A, now=2.0)
    state = store.session(SESSION_A)
    assert state is not None
    assert (state.baselined, state.new_traffic, state.last_success_at) == (True, True, 2.0)
    assert store.known(SESSION_A) == {}


def test_ensure_session_of_a_watched_session_writes_nothing(store: Store) -> None:
    store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
    with StatementLog(store) as statements:
        state = store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=2.0)
    assert not any(sql.startswith(("BEGIN", "INSERT", "UPDATE")) for sql in statements)
    assert (state.session_sid, state.new_traffic) == (SESSION_A, False)


def test_commit_poll_resets_failures(store: Store) -> None:
    store.ensure_session(SERVICE, SESSION_A, new_traffic=False, now=1.0)
    store.record_failure(SESSION_A, "TransientSourceError: 503\n  from Twilio", 2.0)
    store.record_failure(SESSION_A, "x" * 5000, 3.0)
    failing = store.session(SESSION_A)
    assert failing is not None
    assert failing.consecutive_failures == 2
    assert failing.last_failure_at == 3.0
    assert failing.last_error is not None
    assert len(failing.last_error) <= 300
    store.record_failure(SESSION_A, "TransientSourceError: 503\n  from Twilio", 4.0)
    assert store.session(SESSION_A).last_error == "TransientSourceError: 503 from Twilio"  # type: ignore[union-attr]
    store.commit_poll(SERVICE, SESSION_A, fetched={}, events=[], now=5.0)
    recovered = store.session(SESSION_A)
    assert recovered is not None
    assert (recovered.consecutive_failures, recovered.last_success_at) == (0, 5.0)


@pytest.mark.parametrize(
    "bad_sinks",
    [["ops", None], "ops"],
    ids=["constraint-error", "str-instead-of-list"],
)
def test_commit_poll_failure_rolls_back_everything(
    store: Store, path: Path, bad_sinks: object
) -> None:
    first = make_event(SESSION_A, 1)
    store.commit_poll(SERVICE, SESSION_A, fetched={"KI1": FP}, events=[(first, ["ops"])], now=1.0)
    before_session = store.session(SESSION_A)
    good, bad = make_event(SESSION_A, 2), make_event(SESSION_A, 3)
    with pytest.raises((StateError, TypeError)):
        store.commit_poll(
            SERVICE,
            SESSION_A,
            fetched={"KI2": FP, "KI3": FP},
            events=[(good, ["ops", "slack"]), (bad, bad_sinks)],  # type: ignore[list-item]
            now=2.0,
            status="closed",
        )
    assert store.known(SESSION_A) == {"KI1": FP}
    assert store.session(SESSION_A) == before_session
    assert [d.event.id for d in store.due("ops", None, 10)] == [first.id]
    assert store.pending_count() == 1
    assert count_rows(path, "events") == 1
    store.commit_poll(SERVICE, SESSION_A, fetched={"KI2": FP}, events=[], now=3.0)  # usable


def test_recommitting_the_same_events_adds_nothing(store: Store, path: Path) -> None:
    events = [make_event(SESSION_A, 1), make_event(SESSION_A, 2, updated=True)]
    for now in (1.0, 2.0):
        store.commit_poll(
            SERVICE,
            SESSION_A,
            fetched={"KI1": FP, "KI2": FP},
            events=[(e, ["ops", "slack"]) for e in events],
            now=now,
        )
    assert store.pending_count() == 4
    assert count_rows(path, "events") == 2
    for event in events:  # the session's queue holds each event once, in order
        [head] = store.due("ops", None, 10)
        assert (head.event, head.enqueued_at) == (event, 1.0)
        store.ack([head.id])
    assert store.due("ops", None, 10) == []


def test_event_without_sinks_is_not_stored(store: Store, path: Path) -> None:
    store.commit_poll(
        SERVICE, SESSION_A, fetched={"KI1": FP}, events=[(make_event(SESSION_A, 1), [])], now=1.0
    )
    assert count_rows(path, "events") == 0
    assert store.pending_count() == 0


# ---- the outbox ----------------------------------------------------------------------------


def test_delivery_carries_the_event_and_its_bookkeeping(store: Store) -> None:
    event = make_event(SESSION_A, 1, updated=True)
    enqueue(store, SESSION_A, [event], ["ops"], now=7.0)
    [delivery] = store.due("ops", 7.0, 10)
    assert delivery == Delivery(
        id=delivery.id,
        sink="ops",
        event=event,
        attempts=0,
        enqueued_at=7.0,
        next_attempt_at=7.0,
        last_error=None,
        last_status=None,
    )
    assert delivery.event.payload() == event.payload()
    assert store.due("ops", 6.9, 10) == []
    assert store.due("slack", None, 10) == []


def test_due_keeps_each_session_in_order_and_never_makes_others_wait(store: Store) -> None:
    a1, a2, a3 = (make_event(SESSION_A, n) for n in (1, 2, 3))
    b1, b2 = (make_event(SESSION_B, n) for n in (4, 5))
    enqueue(store, SESSION_A, [a1, a2], ["ops"], now=1.0)
    enqueue(store, SESSION_B, [b1, b2], ["ops"], now=1.0)
    enqueue(store, SESSION_A, [a3], ["ops"], now=1.0)

    def due_events(now: float | None, limit: int = 10) -> list[str]:
        return [d.event.id for d in store.due("ops", now, limit)]

    assert due_events(1.0) == [a1.id, b1.id]
    assert due_events(1.0, limit=1) == [a1.id]
    [head_a, head_b] = store.due("ops", 1.0, 10)
    store.retry_later(head_a.id, next_attempt_at=100.0, error="503", status=503)
    assert due_events(50.0) == [b1.id]  # a2 waits behind the failing a1; b goes on
    assert due_events(None) == [a1.id, b1.id]  # timers ignored, order kept
    assert due_events(100.0) == [a1.id, b1.id]
    store.ack([head_b.id])
    assert due_events(50.0) == [b2.id]
    store.dead_letter(head_a.id, error="410", status=410, now=60.0)
    assert due_events(60.0) == [a2.id, b2.id]  # dead rows do not block
    store.ack([d.id for d in store.due("ops", 60.0, 10)])
    assert due_events(60.0) == [a3.id]
    assert store.due("ops", 60.0, 0) == []


def test_each_sink_has_its_own_queue(store: Store) -> None:
    e1, e2 = make_event(SESSION_A, 1), make_event(SESSION_A, 2)
    enqueue(store, SESSION_A, [e1, e2], ["ops", "slack"], now=1.0)
    [ops_head] = store.due("ops", 1.0, 10)
    store.retry_later(ops_head.id, next_attempt_at=1e9, error="timeout", status=None)
    assert [d.event.id for d in store.due("slack", 1.0, 10)] == [e1.id]
    assert store.due("ops", 1.0, 10) == []


def test_ack_removes_the_event_when_the_last_sink_acks(store: Store, path: Path) -> None:
    event = make_event(SESSION_A, 1)
    enqueue(store, SESSION_A, [event], ["ops", "slack"], now=1.0)
    [ops] = store.due("ops", None, 10)
    store.ack([ops.id])
    assert count_rows(path, "events") == 1
    [slack] = store.due("slack", None, 10)
    assert slack.event == event
    store.ack([slack.id])
    store.ack([])
    assert count_rows(path, "events") == 0
    assert store.pending_count() == 0
    assert store.oldest_pending_enqueued_at() is None


def test_ack_handles_more_ids_than_one_statement_binds(store: Store) -> None:
    events = [make_event(SESSION_A, n) for n in range(1200)]
    enqueue(store, SESSION_A, events, ["ops"], now=1.0)
    rows = store._db.conn.execute("SELECT id FROM deliveries").fetchall()
    store.ack([row[0] for row in rows])
    assert store.pending_count() == 0


def test_retry_later_counts_attempts_and_keeps_a_short_error(store: Store) -> None:
    enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops"], now=1.0)
    [first] = store.due("ops", 1.0, 1)
    store.retry_later(first.id, next_attempt_at=5.0, error="boom\n" * 400, status=502)
    store.retry_later(first.id, next_attempt_at=9.0, error="HTTP 503", status=503)
    [again] = store.due("ops", 9.0, 1)
    assert (again.attempts, again.next_attempt_at) == (2, 9.0)
    assert (again.last_error, again.last_status) == ("HTTP 503", 503)
    assert store.pending_count("ops") == 1


def test_dead_letter_keeps_the_row_out_of_due_until_requeued(store: Store) -> None:
    e1, e2 = make_event(SESSION_A, 1), make_event(SESSION_A, 2)
    enqueue(store, SESSION_A, [e1, e2], ["ops"], now=1.0)
    [head] = store.due("ops", 1.0, 10)
    store.retry_later(head.id, next_attempt_at=2.0, error="500", status=500)
    store.dead_letter(head.id, error="HTTP 400 " + "y" * 1000, status=400, now=3.0)
    [dead] = store.dead_letters()
    assert isinstance(dead, DeadLetter)
    assert (dead.id, dead.event, dead.attempts, dead.dead_at) == (head.id, e1, 2, 3.0)
    assert dead.last_status == 400
    assert dead.last_error is not None
    assert len(dead.last_error) <= 300
    assert store.dead_letters("slack") == []
    assert store.pending_count() == 1
    assert [d.event for d in store.due("ops", None, 10)] == [e2]

    assert store.requeue(now=10.0) == 1
    assert store.dead_letters() == []
    [requeued] = store.due("ops", 10.0, 10)  # back at the head of its session's queue
    assert (requeued.id, requeued.attempts, requeued.next_attempt_at) == (head.id, 0, 10.0)
    assert store.due("ops", 9.0, 10) == []  # and it blocks e2 again until due


def test_requeue_and_purge_select_by_ids_and_sink(store: Store, path: Path) -> None:
    events = [make_event(SESSION_A, n) for n in range(3)]
    enqueue(store, SESSION_A, events, ["ops", "slack"], now=1.0)
    for sink in ("ops", "slack"):
        for _ in events:
            [head] = store.due(sink, None, 1)
            store.dead_letter(head.id, error="400", status=400, now=2.0)
    ops_dead = [d.id for d in store.dead_letters("ops")]
    assert len(ops_dead) == 3
    assert len(store.dead_letters()) == 6
    assert store.requeue([ops_dead[0]], sink="slack", now=3.0) == 0
    assert store.requeue([ops_dead[0]], now=3.0) == 1
    assert store.requeue([], now=3.0) == 0
    assert store.purge([ops_dead[1]]) == 1
    assert store.purge(sink="slack") == 3
    assert store.purge([ops_dead[0]]) == 0  # pending rows are never purged
    assert [d.id for d in store.dead_letters()] == [ops_dead[2]]
    assert count_rows(path, "events") == 2  # events[1] had no delivery left
    assert store.purge() == 1
    assert count_rows(path, "events") == 1
    assert [d.event for d in store.due("ops", None, 10)] == [events[0]]


def test_pending_counts_and_oldest_enqueued(store: Store) -> None:
    enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops", "slack"], now=5.0)
    enqueue(store, SESSION_B, [make_event(SESSION_B, 2)], ["ops"], now=8.0)
    assert (store.pending_count(), store.pending_count("ops"), store.pending_count("x")) == (
        3,
        2,
        0,
    )
    assert store.oldest_pending_enqueued_at() == 5.0


# ---- pruning, threads, summary, reopen -----------------------------------------------------


def test_prune_forgets_sessions_gone_past_grace_with_nothing_pending(
    store: Store, path: Path
) -> None:
    old_idle, old_busy, recent, active = (f"KC{c * 32}" for c in "1234")
    for sid in (old_idle, old_busy, recent, active):
        store.commit_poll(SERVICE, sid, fetched={"KI1": FP, "KI2": FP}, events=[], now=1.0)
        store.set_thread_ts("slack", sid, "1700000000.000100")
    enqueue(store, old_busy, [make_event(old_busy, 1)], ["ops"], now=1.0)
    store.mark_session_gone(old_idle, 10.0)
    store.mark_session_gone(old_busy, 10.0)
    store.mark_session_gone(recent, 95.0)

    assert store.prune(now=100.0, grace_seconds=50.0) == 1
    assert store.session(old_idle) is None
    assert store.known(old_idle) == {}
    assert store.thread_ts("slack", old_idle) is None
    assert {s.session_sid for s in store.sessions()} == {old_busy, recent, active}
    assert count_rows(path, "interactions") == 2 * 3 + 1

    store.ack(ids_of(store.due("ops", None, 10)))
    assert store.prune(now=100.0, grace_seconds=50.0) == 1
    assert {s.session_sid for s in store.sessions()} == {recent, active}
    assert store.prune(now=100.0, grace_seconds=50.0) == 0


def test_thread_ts_is_kept_per_sink_and_session(store: Store) -> None:
    assert store.thread_ts("slack", SESSION_A) is None
    store.set_thread_ts("slack", SESSION_A, "1.1")
    store.set_thread_ts("slack", SESSION_A, "2.2")
    store.set_thread_ts("other", SESSION_A, "3.3")
    assert store.thread_ts("slack", SESSION_A) == "2.2"
    assert store.thread_ts("other", SESSION_A) == "3.3"
    assert store.thread_ts("slack", SESSION_B) is None


def test_summary_reports_sessions_interactions_outbox_and_watches(store: Store, path: Path) -> None:
    store.watch_started_at(SERVICE, 1.0)
    store.commit_poll(SERVICE, SESSION_A, fetched={"KI1": FP, "KI2": FP}, events=[], now=1.0)
    store.ensure_session(SERVICE, SESSION_B, new_traffic=True, now=1.0)
    store.record_failure(SESSION_B, "503", 2.0)
    store.commit_poll(SERVICE, "KC" + "c" * 32, fetched={"KI3": FP}, events=[], now=1.0)
    store.mark_session_gone("KC" + "c" * 32, 3.0)
    enqueue(store, SESSION_A, [make_event(SESSION_A, 1)], ["ops", "slack"], now=10.0)
    enqueue(store, SESSION_A, [make_event(SESSION_A, 2)], ["ops"], now=20.0)
    [head] = store.due("slack", None, 1)
    store.dead_letter(head.id, error="400", status=400, now=21.0)
    store.record_sink_disabled("ops", status=404, reason="webhook\ndeleted", now=22.0)
    store.record_sink_disabled("ops", status=404, reason="webhook deleted", now=24.0)

    assert store.summary(now=25.0) == {
        "path": str(path),
        "schema_version": len(schema.MIGRATIONS),
        "sessions": {"watched": 2, "baselined": 1, "gone": 1, "failing": 1},
        "interactions_tracked": 2 + 2 + 1,  # KI1, KI2, two enqueued, KI3
        "outbox": {
            "pending": {"ops": 2},
            "dead": {"slack": 1},
            "oldest_pending_age_seconds": 15.0,
            "disabled": {"ops": {"since": 22.0, "status": 404, "reason": "webhook deleted"}},
        },
        "watches": [{"service_sid": SERVICE, "started_at": 1.0}],
    }


def test_empty_summary_has_no_oldest_age(store: Store) -> None:
    outbox = store.summary()["outbox"]
    assert outbox == {
        "pending": {},
        "dead": {},
        "oldest_pending_age_seconds": None,
        "disabled": {},
    }


def test_failing_sinks_count_retried_rows_and_give_the_error_of_the_most_tried(
    store: Store,
) -> None:
    enqueue(store, SESSION_A, [make_event(SESSION_A, n) for n in (1, 2)], ["ops", "fine"], 1.0)
    enqueue(store, SESSION_B, [make_event(SESSION_B, 3)], ["ops"], now=1.0)
    a_head, b_head = store.due("ops", None, 10)
    store.retry_later(a_head.id, next_attempt_at=50.0, error="HTTP 503", status=503)
    store.retry_later(b_head.id, next_attempt_at=40.0, error="HTTP 502", status=502)
    store.retry_later(b_head.id, next_attempt_at=90.0, error="HTTP 504", status=504)

    (ops,) = store.failing_sinks()
    assert (ops.sink, ops.deliveries, ops.attempts, ops.next_attempt_at) == ("ops", 2, 2, 50.0)
    assert (ops.last_status, ops.last_error) == (504, "HTTP 504")
    assert store.failing_sinks("fine") == []
    store.ack([a_head.id, b_head.id])
    assert store.failing_sinks() == []


def test_disabled_note_is_cleared_by_sink_or_all_and_with_a_removed_sink(store: Store) -> None:
    for sink in ("a", "b", "c"):
        store.record_sink_disabled(sink, status=None, reason=f"{sink} gone", now=1.0)

    assert [d.sink for d in store.clear_sink_disabled("a")] == ["a"]
    assert store.clear_sink_disabled("a") == []
    store.dead_letter_other_sinks(["c"], now=2.0)  # "b" left the config
    assert [d.sink for d in store.disabled_sinks()] == ["c"]
    assert [d.reason for d in store.clear_sink_disabled()] == ["c gone"]
    assert store.disabled_sinks() == []


def test_everything_survives_close_and_reopen(path: Path) -> None:
    events = [make_event(SESSION_A, 1), make_event(SESSION_A, 2, updated=True)]
    with Store.open(path) as store:
        store.watch_started_at(SERVICE, 1.0)
        store.ensure_session(SERVICE, SESSION_A, new_traffic=True, now=1.0)
        store.commit_poll(
            SERVICE,
            SESSION_A,
            fetched={"KI1": FP},
            events=[(e, ["ops"]) for e in events],
            now=2.0,
            activity_marker="m",
        )
        [head] = store.due("ops", None, 10)
        store.dead_letter(head.id, error="400", status=400, now=3.0)
        store.set_thread_ts("slack", SESSION_A, "9.9")
        before = (store.sessions(), store.dead_letters(), store.due("ops", None, 10))
        summary = store.summary(now=5.0)
    with Store.open(path) as store:
        assert (store.sessions(), store.dead_letters(), store.due("ops", None, 10)) == before
        assert store.known(SESSION_A) == {"KI1": FP}
        assert store.watch_started_at(SERVICE, 50.0) == 1.0
        assert store.thread_ts("slack", SESSION_A) == "9.9"
        assert store.summary(now=5.0) == summary


def test_closed_store_raises_state_error(path: Path) -> None:
    store = Store.open(path)
    store.close()
    with pytest.raises(StateError):
        store.pending_count()


# ---- the queue heads agree with the definition of due() -----------------------------------

_operation = st.one_of(
    st.tuples(st.just("enqueue"), st.sampled_from("abc"), st.sets(st.sampled_from(["x", "y"]))),
    st.tuples(st.just("ack"), st.integers(0, 50)),
    st.tuples(st.just("retry"), st.integers(0, 50), st.sampled_from([0.0, 5.0, 10.0])),
    st.tuples(st.just("dead"), st.integers(0, 50)),
    st.tuples(st.just("requeue"), st.integers(0, 50)),
    st.tuples(st.just("purge"), st.integers(0, 50)),
)


def expected_due(rows: dict[int, dict[str, object]], sink: str, now: float | None) -> list[int]:
    """due() by its definition: the first pending row of each queue, if its timer allows."""
    heads: dict[object, int] = {}
    for rid in sorted(rows):
        row = rows[rid]
        if row["sink"] == sink and row["state"] == "pending":
            heads.setdefault(row["session"], rid)
    due = [rid for rid in heads.values() if now is None or rows[rid]["next"] <= now]  # type: ignore[operator]
    return sorted(due)


def test_due_matches_its_definition_after_any_operations(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:

        @settings(max_examples=80, deadline=None)
        @given(st.lists(_operation, max_size=30))
        def check(operations: list[tuple[object, ...]]) -> None:
            with store._db.transaction() as conn:  # a fresh outbox for every example
                conn.execute("DELETE FROM deliveries")
                conn.execute("DELETE FROM events")
            run_against_model(store, operations)

        check()


def run_against_model(store: Store, operations: list[tuple[object, ...]]) -> None:
    rows: dict[int, dict[str, object]] = {}
    for number, (kind, *args) in enumerate(operations):
        if kind == "enqueue":
            session, sinks = f"KC{args[0]}", sorted(args[1])  # type: ignore[call-overload]
            newest = store._db.conn.execute("SELECT MAX(id) FROM deliveries").fetchone()[0]
            enqueue(store, session, [make_event(session, number)], sinks, now=0.0)
            added = store._db.conn.execute(
                "SELECT id, sink FROM deliveries WHERE id > ?", (newest or 0,)
            )
            for rid, sink in added:
                rows[rid] = {"sink": sink, "session": session, "state": "pending", "next": 0.0}
        elif rows:
            apply_to_model(store, rows, str(kind), args)
        for sink in ("x", "y"):
            for now in (None, 0.0, 1.0, 5.0):
                assert ids_of(store.due(sink, now, 100)) == expected_due(rows, sink, now)


def apply_to_model(
    store: Store, rows: dict[int, dict[str, object]], kind: str, args: list[object]
) -> None:
    """Apply one operation to the store and to the model, when it applies to the row."""
    rid = sorted(rows)[int(args[0]) % len(rows)]  # type: ignore[call-overload]
    row = rows[rid]
    if kind == "ack" and row["state"] == "pending":
        store.ack([rid])
        del rows[rid]
    elif kind == "retry" and row["state"] == "pending":
        store.retry_later(rid, next_attempt_at=float(args[1]), error="e", status=None)  # type: ignore[arg-type]
        row["next"] = args[1]
    elif kind == "dead" and row["state"] == "pending":
        store.dead_letter(rid, error="e", status=None, now=1.0)
        row["state"] = "dead"
    elif kind == "requeue" and row["state"] == "dead":
        assert store.requeue([rid], now=1.0) == 1
        row.update(state="pending", next=1.0)
    elif kind == "purge" and row["state"] == "dead":
        assert store.purge([rid]) == 1
        del rows[rid]


# ---- a poll's commit (poll.py over the store) ------------------------------------------------


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


class ListedSource:
    """Answers every session with the records it currently holds."""

    def __init__(self, records: Sequence[Interaction]) -> None:
        self.records = list(records)

    async def list_interactions(self, service_sid: str, session_sid: str) -> list[Interaction]:
        return list(self.records)


def session_poller(store: Store, source: ListedSource) -> SessionPoller:
    settings = PollConfig(first_run="baseline", settle_seconds=900.0, timeout_seconds=5.0)
    return SessionPoller(source, store, settings, [AllEvents()], clock=lambda: 1e9)


async def test_poll_of_an_unchanged_session_writes_only_its_session_row(store: Store) -> None:
    source = ListedSource([interaction_record(f"KI{n}") for n in range(3)])
    poller = session_poller(store, source)
    assert (await poller.poll(SERVICE, SESSION_A)).ok
    before = store._db.conn.total_changes
    with StatementLog(store) as statements:
        outcome = await poller.poll(SERVICE, SESSION_A, activity_marker="m1")
    assert (outcome.ok, outcome.events) == (True, 0)
    assert store._db.conn.total_changes - before == 1
    assert len(interaction_reads(statements)) == 1  # the known set, read once to compare
    assert store.session(SESSION_A).activity_marker == "m1"  # type: ignore[union-attr]


async def test_poll_of_a_changed_session_commits_its_event(store: Store) -> None:
    source = ListedSource([interaction_record("KI1"), interaction_record("KI2")])
    poller = session_poller(store, source)
    await poller.poll(SERVICE, SESSION_A)
    changed = FP._replace(outbound_resource_status="failed")
    source.records[1] = interaction_record("KI2", changed)
    with StatementLog(store) as statements:
        outcome = await poller.poll(SERVICE, SESSION_A)
    assert outcome.events == 1
    assert len(interaction_reads(statements)) == 1
    assert store.known(SESSION_A) == {"KI1": FP, "KI2": changed}
    assert [d.event.interaction_sid for d in store.due("ops", None, 10)] == ["KI2"]


async def test_poll_listing_a_known_sid_twice_instead_of_another_forgets_nothing(
    store: Store,
) -> None:
    source = ListedSource([interaction_record("KI1"), interaction_record("KI2")])
    poller = session_poller(store, source)
    await poller.poll(SERVICE, SESSION_A)
    source.records = [interaction_record("KI1"), interaction_record("KI1")]
    await poller.poll(SERVICE, SESSION_A)
    assert store.known(SESSION_A) == {"KI1": FP, "KI2": FP}


def test_a_watch_begins_once_with_its_sessions_and_can_end(store: Store) -> None:
    sessions = ["KC" + f"{n:032x}" for n in range(3)]
    assert store.watch_begun(SERVICE) is None
    assert store.begin_watch(SERVICE, sessions, 100.0) == 100.0
    assert store.begin_watch(SERVICE, ["KC" + "f" * 32], 200.0) == 100.0  # begun already
    assert sorted(s.session_sid for s in store.sessions(SERVICE)) == sessions
    assert all(not s.baselined and not s.new_traffic for s in store.sessions(SERVICE))
    assert store.watched_services() == [SERVICE]
    store.end_watch(SERVICE)
    assert store.watch_begun(SERVICE) is None and store.watched_services() == []


def test_a_gone_session_can_be_revived(store: Store) -> None:
    sid = "KC" + "1" * 32
    store.ensure_session(SERVICE, sid, new_traffic=False, now=10.0)
    store.mark_session_gone(sid, 20.0)
    assert store.watched_count() == 0
    store.revive_session(sid)
    state = store.session(sid)
    assert state is not None and state.gone_at is None and store.watched_count() == 1
