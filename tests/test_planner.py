"""Change-driven polling: which sessions a cycle polls, and why."""

from __future__ import annotations

from poller.planner import PlanSettings, plan_listed, sweep_quota
from poller.records import Session
from poller.state import SessionState

SERVICE = "KS" + "a" * 32
SETTINGS = PlanSettings(interval_seconds=10, full_sweep_seconds=100)
NOW = 1_800_000_000.0


def sid(n: int) -> str:
    return f"KC{n:032x}"


def session(
    n: int,
    *,
    last: str = "2026-11-27T10:00:00Z",
    status: str = "open",
    created: str = "2026-01-01T00:00:00Z",
) -> Session:
    record = Session.from_api(
        {
            "sid": sid(n),
            "service_sid": SERVICE,
            "status": status,
            "date_created": created,
            "date_updated": created,
            "date_last_interaction": last,
        }
    )
    assert record is not None
    return record


def state(s: Session, **overrides: object) -> SessionState:
    values: dict[str, object] = {
        "service_sid": SERVICE,
        "session_sid": s.sid,
        "baselined": True,
        "new_traffic": False,
        "last_success_at": NOW - 5,
        "consecutive_failures": 0,
        "last_error": None,
        "activity_marker": s.activity_marker,
        "status": s.status,
        "unsettled_until": None,
    }
    values.update(overrides)
    return SessionState(**values)  # type: ignore[arg-type]


def reasons(planned: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {p.session_sid: p.reason for p in planned}


def test_quiet_sessions_are_not_polled_except_the_sweep_share() -> None:
    listed = [session(n) for n in range(100)]
    states = {s.sid: state(s, last_success_at=NOW - n) for n, s in enumerate(listed)}
    planned = plan_listed(SERVICE, listed, states, watch_started_at=0, now=NOW, settings=SETTINGS)
    # 100 sessions swept once per 100 s at a 10 s interval: 10 per cycle, least recent first.
    assert reasons(planned) == {sid(n): "sweep" for n in range(90, 100)}


def test_moved_new_failing_and_settling_sessions_are_polled() -> None:
    listed = [session(n) for n in range(5)]
    states = {s.sid: state(s) for s in listed}
    moved = session(1, last="2026-11-27T11:00:00Z")
    listed[1] = moved
    states[sid(2)] = state(listed[2], consecutive_failures=2)
    states[sid(3)] = state(listed[3], unsettled_until=NOW + 60)
    del states[sid(4)]
    planned = plan_listed(
        SERVICE,
        listed,
        states,
        watch_started_at=0,
        now=NOW,
        settings=PlanSettings(interval_seconds=10, full_sweep_seconds=10_000),
    )
    assert reasons(planned) == {
        sid(0): "sweep",
        sid(1): "activity",
        sid(2): "retry",
        sid(3): "settling",
        sid(4): "new",
    }


def test_expired_settle_window_stops_polling() -> None:
    s = session(0)
    planned = plan_listed(
        SERVICE,
        [s, session(1)],
        {
            s.sid: state(s, unsettled_until=NOW - 1),
            sid(1): state(session(1), last_success_at=NOW - 100),
        },
        watch_started_at=0,
        now=NOW,
        settings=PlanSettings(10, 10_000),
    )
    assert reasons(planned) == {sid(1): "sweep"}


def test_session_created_after_watch_began_is_new_traffic() -> None:
    old = session(0, created="2026-01-01T00:00:00Z")
    new = session(1, created="2027-03-01T00:00:00Z")
    started = 1_790_000_000.0  # 2026-09-21T14:13:20Z
    planned = {
        p.session_sid: p
        for p in plan_listed(
            SERVICE, [old, new], {}, watch_started_at=started, now=NOW, settings=SETTINGS
        )
    }
    assert not planned[sid(0)].new_traffic
    assert planned[sid(1)].new_traffic


def test_closed_session_gets_a_final_poll_then_is_left_alone() -> None:
    closed = session(0, status="closed")
    planned = plan_listed(
        SERVICE,
        [closed],
        {closed.sid: state(session(0))},
        watch_started_at=0,
        now=NOW,
        settings=SETTINGS,
    )
    assert [(p.reason, p.final) for p in planned] == [("closed", True)]
    gone = {closed.sid: state(closed, gone_at=NOW - 1)}
    assert (
        plan_listed(SERVICE, [closed], gone, watch_started_at=0, now=NOW, settings=SETTINGS) == []
    )


def test_vanished_session_gets_a_final_poll() -> None:
    s = session(0)
    planned = plan_listed(
        SERVICE, [], {s.sid: state(s)}, watch_started_at=0, now=NOW, settings=SETTINGS
    )
    assert [(p.session_sid, p.reason, p.final) for p in planned] == [(sid(0), "vanished", True)]


def test_explicit_list_polls_only_its_sessions_and_unlisted_ones_every_cycle() -> None:
    listed = [session(n) for n in range(3)]
    states = {s.sid: state(s) for s in listed}
    planned = plan_listed(
        SERVICE,
        listed,
        states,
        watch_started_at=0,
        now=NOW,
        settings=PlanSettings(10, 10_000),
        only=frozenset({sid(1), sid(7)}),
    )
    assert reasons(planned) == {sid(1): "sweep", sid(7): "unlisted"}


def test_everything_polls_every_session_that_is_not_gone_for_good() -> None:
    listed = [session(n) for n in range(3)] + [session(3, status="closed")]
    states = {s.sid: state(s) for s in listed}
    states[sid(3)] = state(listed[3], gone_at=NOW - 1)
    planned = plan_listed(
        SERVICE,
        listed,
        states,
        watch_started_at=0,
        now=NOW,
        settings=PlanSettings(10, 10_000),
        everything=True,
    )
    assert sorted(reasons(planned)) == [sid(0), sid(1), sid(2)]


def test_sweep_quota_covers_every_session_once_per_period() -> None:
    settings = PlanSettings(interval_seconds=10, full_sweep_seconds=3600)
    assert sweep_quota(5000, settings) == 14
    assert sweep_quota(0, settings) == 0
    assert sweep_quota(3, PlanSettings(10, 5)) == 3


def test_no_session_is_new_traffic_in_the_listing_that_begins_the_watch() -> None:
    new = session(1, created="2027-03-01T00:00:00Z")
    (planned,) = plan_listed(SERVICE, [new], {}, watch_started_at=None, now=NOW, settings=SETTINGS)
    assert planned.reason == "new" and not planned.new_traffic


def test_unknown_session_created_within_clock_skew_of_the_start_is_new_traffic() -> None:
    started = 1_790_000_000.0
    just_before = session(2, created="2026-09-21T14:11:00Z")  # 140 s before the start
    long_before = session(3, created="2026-09-21T13:00:00Z")
    closed = session(4, created="2027-01-01T00:00:00Z", status="closed")
    planned = {
        p.session_sid: p.new_traffic
        for p in plan_listed(
            SERVICE,
            [just_before, long_before, closed],
            {},
            watch_started_at=started,
            now=NOW,
            settings=SETTINGS,
        )
    }
    assert planned == {sid(2): True, sid(3): False, sid(4): False}


def test_recent_activity_is_confirmed_by_one_more_poll() -> None:
    # Twilio's dates have one-second resolution: an interaction added in the same second as
    # the one a poll saw leaves the marker unmoved, so recent activity is polled twice.
    recent = session(0, last="2027-01-15T08:00:00Z")  # NOW is 2027-01-15T08:00:00Z
    states = {recent.sid: state(session(0))}
    (first,) = plan_listed(
        SERVICE, [recent], states, watch_started_at=0, now=NOW, settings=PlanSettings(10, 10_000)
    )
    assert first.reason == "activity" and first.marker == "?" + recent.activity_marker
    states = {recent.sid: state(recent, activity_marker=first.marker)}
    (second,) = plan_listed(
        SERVICE,
        [recent],
        states,
        watch_started_at=0,
        now=NOW + 10,
        settings=PlanSettings(10, 10_000),
    )
    assert second.reason == "confirm" and second.marker == recent.activity_marker
    states = {recent.sid: state(recent, activity_marker=second.marker)}
    third = plan_listed(
        SERVICE,
        [recent],
        states,
        watch_started_at=0,
        now=NOW + 20,
        settings=PlanSettings(10, 10_000),
    )
    assert [p.reason for p in third] == ["sweep"]  # idle now: only the sweep's share (1 of 1)


def test_old_activity_needs_no_confirmation() -> None:
    old = session(0, last="2026-11-27T10:00:00Z")
    (planned,) = plan_listed(SERVICE, [old], {}, watch_started_at=None, now=NOW, settings=SETTINGS)
    assert planned.reason == "new" and planned.marker == old.activity_marker


def test_gone_session_listed_open_again_is_revived_and_closed_one_stays_gone() -> None:
    open_again = session(0)
    closed = session(1, status="closed")
    states = {
        open_again.sid: state(open_again, gone_at=NOW - 60),
        closed.sid: state(closed, gone_at=NOW - 60),
    }
    planned = plan_listed(
        SERVICE,
        [open_again, closed],
        states,
        watch_started_at=0,
        now=NOW,
        settings=PlanSettings(10, 10_000),
    )
    assert reasons(planned) == {sid(0): "revived"}
