"""Change-driven polling: which sessions a cycle polls, and why."""

from __future__ import annotations

from poller.detect.planner import (
    Planned,
    PlanSettings,
    cycle_budget,
    plan_explicit,
    plan_listed,
    sweep_quota,
)
from poller.state.models import SessionState
from poller.twilio.records import Session

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


# ---- the request budget ------------------------------------------------------------------------


def listed_at_watch(s: Session, marker: str | None = None) -> SessionState:
    """A session the listing that began the watch showed, not baselined yet."""
    return state(
        s,
        baselined=False,
        last_success_at=None,
        activity_marker=marker or s.activity_marker,
        watch_listed=True,
        watch_last_interaction=s.date_last_interaction,
    )


def after_poll(p: Planned, now: float) -> SessionState:
    assert p.session is not None
    return state(p.session, last_success_at=now, activity_marker=p.marker)


def test_5000_new_sessions_under_a_budget_of_250_are_baselined_once_each_activity_first() -> None:
    # The listing that began the watch: 5,000 sessions, active at different times of a day.
    at_watch = [session(n, last=f"2026-11-27T{n % 24:02d}:{n % 60:02d}:00Z") for n in range(5000)]
    states = {s.sid: listed_at_watch(s) for s in at_watch}
    listed = list(at_watch)
    active = {sid(n) for n in range(0, 5000, 125)}  # 40 sessions move before their baseline
    for n in range(0, 5000, 125):
        listed[n] = session(n, last="2026-12-01T00:00:00Z")
    settings = PlanSettings(interval_seconds=10, full_sweep_seconds=3600)
    baselined: list[str] = []
    now = NOW
    for cycle in range(25):
        planned = plan_listed(
            SERVICE, listed, states, watch_started_at=0, now=now, settings=settings, budget=250
        )
        assert len(planned) == (250 if cycle < 20 else len(planned))
        assert len({p.session_sid for p in planned}) == len(planned)
        if cycle == 0:
            assert {p.session_sid for p in planned[:40]} == active
            assert {p.reason for p in planned[:40]} == {"activity"}
            assert {p.reason for p in planned[40:]} == {"baseline"}
        baselined += [p.session_sid for p in planned if not states[p.session_sid].baselined]
        states.update({p.session_sid: after_poll(p, now) for p in planned})
        now += 10
    assert sorted(baselined) == sorted(s.sid for s in at_watch)  # each one exactly once


def test_priorities_must_then_settling_then_baseline_then_sweep() -> None:
    listed = [session(n) for n in range(4)]
    states = {
        sid(0): state(listed[0], last_success_at=NOW - 1000),  # idle: the sweep's
        sid(1): listed_at_watch(listed[1]),  # baseline
        sid(2): state(listed[2], unsettled_until=NOW + 60),  # settling
        sid(3): state(listed[3], activity_marker="moved earlier"),  # activity
    }
    settings = PlanSettings(10, 10)  # the sweep's share: every idle session
    planned = plan_listed(SERVICE, listed, states, watch_started_at=0, now=NOW, settings=settings)
    assert [p.reason for p in planned] == ["activity", "settling", "baseline", "sweep"]
    capped = plan_listed(
        SERVICE, listed, states, watch_started_at=0, now=NOW, settings=settings, budget=2
    )
    assert [p.reason for p in capped] == ["activity", "settling"]


def test_what_does_not_fit_waits_and_the_oldest_goes_first() -> None:
    listed = [session(n, last="2026-12-01T00:00:00Z") for n in range(3)]
    states = {
        sid(0): state(session(0), last_success_at=NOW - 10),
        sid(1): state(session(1), last_success_at=NOW - 30),
        sid(2): state(session(2), last_success_at=NOW - 20),
    }
    planned = plan_listed(
        SERVICE, listed, states, watch_started_at=0, now=NOW, settings=SETTINGS, budget=2
    )
    assert [p.session_sid for p in planned] == [sid(1), sid(2)]
    states.update({p.session_sid: after_poll(p, NOW) for p in planned})
    (waited,) = plan_listed(
        SERVICE, listed, states, watch_started_at=0, now=NOW + 10, settings=SETTINGS, budget=1
    )
    assert (waited.session_sid, waited.reason) == (sid(0), "activity")


def test_baselines_go_most_recently_active_first() -> None:
    listed = [
        session(0, last="2026-11-01T00:00:00Z"),
        session(1, last="2026-11-20T00:00:00Z"),
        session(2, last="2026-11-10T00:00:00Z"),
        session(3, last=""),
    ]
    states = {s.sid: listed_at_watch(s) for s in listed}
    planned = plan_listed(SERVICE, listed, states, watch_started_at=0, now=NOW, settings=SETTINGS)
    assert [p.session_sid for p in planned] == [sid(1), sid(2), sid(0), sid(3)]


def test_new_traffic_is_a_must_and_an_unknown_old_session_waits_like_a_baseline() -> None:
    started = 1_790_000_000.0
    old = session(0, created="2026-01-01T00:00:00Z", last="2026-12-01T00:00:00Z")
    new = session(1, created="2027-03-01T00:00:00Z", last="2026-01-01T00:00:00Z")
    (planned,) = plan_listed(
        SERVICE, [old, new], {}, watch_started_at=started, now=NOW, settings=SETTINGS, budget=1
    )
    assert (planned.session_sid, planned.new_traffic) == (sid(1), True)


def test_cycle_budget_is_the_intervals_share_of_requests_less_the_listing() -> None:
    settings = PlanSettings(interval_seconds=10, full_sweep_seconds=3600, requests_per_second=25)
    assert cycle_budget(settings, listing_pages=5) == 207  # floor(25 x 10 x 0.85) - 5
    assert cycle_budget(PlanSettings(10, 3600), listing_pages=5) is None
    assert cycle_budget(PlanSettings(1, 3600, requests_per_second=1), listing_pages=9) == 1


def test_an_explicit_watch_without_the_listing_stays_within_the_budget_oldest_first() -> None:
    limited = PlanSettings(interval_seconds=10, full_sweep_seconds=100, requests_per_second=10)
    budget = cycle_budget(limited, 0)
    assert budget is not None and budget < 300
    sessions = [sid(n) for n in range(300)]
    # Session n was last polled at NOW - n: the higher n, the longer it has waited.
    states = {
        sid(n): state(session(n), last_success_at=NOW - n) for n in range(1, 300)
    }  # sid(0) has never been polled: it goes first
    planned = plan_explicit(SERVICE, sessions, states, settings=limited)
    assert [p.session_sid for p in planned] == [sid(0), *(sid(n) for n in range(299, 0, -1))][
        :budget
    ]
    assert {p.reason for p in planned} == {"explicit"}


def test_an_explicit_poll_that_may_fetch_its_session_counts_two_requests() -> None:
    fetching = PlanSettings(
        interval_seconds=10,
        full_sweep_seconds=100,
        requests_per_second=10,
        requests_per_unlisted_poll=2,
    )
    budget = cycle_budget(fetching, 0)
    assert budget is not None
    sessions = [sid(n) for n in range(300)]
    assert len(plan_explicit(SERVICE, sessions, {}, settings=fetching)) == budget // 2
    # poller once polls everything, and a gone session is never planned
    gone = {sid(1): state(session(1), gone_at=NOW)}
    everything = plan_explicit(SERVICE, sessions, gone, settings=fetching, everything=True)
    assert len(everything) == 299 and sid(1) not in {p.session_sid for p in everything}
