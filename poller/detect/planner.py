"""Pure: which sessions of a Service to poll this cycle (change-driven polling).

Polling every session every cycle would need 5,000 requests per cycle for 5,000 sessions; at
Proxy's 30 requests/s that is almost three minutes. The Sessions list costs one request per
1,000 sessions and says which sessions moved. A session is polled when:

- it is new to the state (its baseline, or all of it when it is new traffic);
- its activity marker (``date_last_interaction``, ``date_updated``, ``status``) moved, and
  once more in the next cycle ("confirm"): Twilio's dates have one-second resolution, so an
  interaction added in the same second as the one a poll saw leaves the marker unmoved;
- it holds young interactions in a non-final status (``unsettled_until`` in the future), since a
  status change does not move the session's dates;
- its last poll failed;
- it is closed (its final poll) or vanished from the list (final poll: 404 marks it gone);
- it is among the least recently polled, a few each cycle, so that every session is swept
  once per ``full_sweep_seconds`` as a safety net.

A cycle polls no more sessions than its Service's request budget for one interval allows
(:func:`cycle_budget`), by priority: what must be looked at (activity, confirm, retry, closed,
vanished, revived, unlisted, new traffic) before settling, settling before baselines (the most
recently active first), baselines before the sweep. What does not fit waits for the next
cycle, where it comes first within its priority (the least recently polled first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from poller.record import Record
from poller.state.models import SessionState
from poller.twilio.records import Session, parse_time

UNCONFIRMED = "?"
_NEEDS_CONFIRMATION = frozenset({"new", "baseline", "retry", "activity", "revived"})

# Priorities, lowest first; what a reason does not name is a must (activity, retry, ...).
_SETTLING, _BASELINE, _SWEEP = 1, 2, 3
_PRIORITY = {"settling": _SETTLING, "baseline": _BASELINE, "sweep": _SWEEP}

# Share of an interval's requests a cycle plans: a cycle using them all would end just as the
# next is due, and the scheduler's jitter (up to a quarter interval) would then skip the next
# cycle every few cycles. The rest absorbs that, the retries and the next pages of long sessions.
BUDGET_SHARE = 0.85

# How far Twilio's clock and ours may disagree when telling new sessions from old ones.
CLOCK_SKEW_SECONDS = 300.0


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Planned(Record):
    """One session to poll this cycle, and why."""

    service_sid: str
    session_sid: str
    reason: str
    new_traffic: bool = False
    session: Session | None = None
    final: bool = False
    # The activity marker to store after this poll (see ``_marker_after``).
    marker: str | None = None


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class PlanSettings(Record):
    """What the planner reads of the config: the interval, the sweep, the budget."""

    interval_seconds: float
    full_sweep_seconds: float
    # The Service's rate limit (``twilio.max_requests_per_second``); None: no budget.
    requests_per_second: float | None = None
    # Requests one poll of an unlisted session may cost: 2 when it may fetch its Session too
    # (a sink takes session events), else 1.
    requests_per_unlisted_poll: int = 1


def cycle_budget(settings: PlanSettings, listing_pages: int) -> int | None:
    """How many polls one cycle may plan: the interval's requests less the listing's pages.

    None when there is no limit. Never less than one, so a cycle always moves on.
    """
    if settings.requests_per_second is None:
        return None
    requests = math.floor(settings.requests_per_second * settings.interval_seconds * BUDGET_SHARE)
    return max(1, requests - listing_pages)


def sweep_quota(total: int, settings: PlanSettings) -> int:
    """How many least-recently-polled sessions to add per cycle to sweep all once a period."""
    if total == 0:
        return 0
    cycles = max(1.0, settings.full_sweep_seconds / settings.interval_seconds)
    return math.ceil(total / cycles)


def _marker_after(reason: str, session: Session, now: float) -> str:
    """The activity marker to store after polling ``session`` for ``reason``.

    After a poll caused by recent activity (or a session's first poll), the marker is stored
    with a ``?`` in front, "seen, not confirmed", so that the next cycle polls once more: an
    interaction added later in the same second as the marker leaves the marker unmoved. A
    session whose last activity is older than the clock skew we allow needs no confirmation.
    """
    listed = session.activity_marker
    if reason not in _NEEDS_CONFIRMATION:
        return listed
    latest = max(
        (
            t.timestamp()
            for t in (parse_time(session.date_last_interaction), parse_time(session.date_updated))
            if t is not None
        ),
        default=None,
    )
    if latest is not None and latest < now - CLOCK_SKEW_SECONDS:
        return listed
    return UNCONFIRMED + listed


def _created_since(session: Session, started_at: float) -> bool:
    """Could this unknown session have been created after its watch began?

    Unknown to a watch that has listed its Service before means created since; the clock
    check (with room for skew between Twilio's clock and ours) only guards against a session
    that an earlier listing missed, whose whole history would otherwise be sent. A closed
    session is never new traffic.
    """
    if session.is_closed:
        return False
    created = parse_time(session.date_created)
    return created is None or created.timestamp() >= started_at - CLOCK_SKEW_SECONDS


def _reason(state: SessionState | None, session: Session, now: float) -> str | None:
    if state is None:
        return "new"
    if state.gone_at is not None:
        # Listed and not closed, yet marked gone: unwatched, then watched again within the
        # grace period (or a 404 that Twilio's list does not agree with). Look again.
        return "revived"
    if state.consecutive_failures > 0 or (not state.baselined and state.new_traffic):
        return "retry"
    if not state.baselined:
        # Listed when the watch began, not fetched yet: activity since then is polled at once.
        moved = state.activity_marker not in (None, session.activity_marker)
        return "activity" if moved else "baseline"
    if session.is_closed:
        return "closed"
    if state.activity_marker == UNCONFIRMED + session.activity_marker:
        return "confirm"
    if state.activity_marker != session.activity_marker:
        return "activity"
    if state.unsettled_until is not None and state.unsettled_until > now:
        return "settling"
    return None


def plan_explicit(
    service_sid: str,
    sessions: Sequence[str],
    states: Mapping[str, SessionState],
    *,
    settings: PlanSettings,
    everything: bool = False,
) -> list[Planned]:
    """Plan a cycle of an explicit ``sessions:`` watch that does not read the Sessions list.

    Every session that is not gone, within the cycle's budget (each poll counted at
    ``requests_per_unlisted_poll``); what does not fit waits, the least recently polled first.
    """
    planned = [
        Planned(service_sid, sid, "explicit")
        for sid in sessions
        if sid not in states or states[sid].gone_at is None
    ]
    budget = None if everything else cycle_budget(settings, 0)
    if budget is None:
        return planned
    fits = max(1, budget // max(1, settings.requests_per_unlisted_poll))
    if len(planned) <= fits:
        return planned

    def last_polled(p: Planned) -> float:
        state = states.get(p.session_sid)
        return -1.0 if state is None else state.last_success_at or 0.0

    return sorted(planned, key=last_polled)[:fits]


def plan_listed(
    service_sid: str,
    listed: Sequence[Session],
    states: Mapping[str, SessionState],
    *,
    watch_started_at: float | None,
    now: float,
    settings: PlanSettings,
    only: frozenset[str] | None = None,
    everything: bool = False,
    budget: int | None = None,
) -> list[Planned]:
    """Plan a cycle of one Service from its Sessions list and the stored session states.

    ``only``: restrict to these sessions (an explicit ``sessions:`` watch); sessions of it that
    the list does not show are polled every cycle (the list is the cheap path, not the truth).
    ``everything``: poll every session that is not gone (``poller once``).
    ``watch_started_at``: None when no session can be new traffic (an explicit list, or the
    listing that began the watch, whose sessions are what already existed).
    ``budget``: at most this many polls, by priority (None: no limit). The plan is in the
    order to poll in.
    """
    ranked: list[tuple[int, float, str, Planned]] = []
    idle: list[tuple[float, str, Session]] = []
    seen: set[str] = set()
    for session in listed:
        if only is not None and session.sid not in only:
            continue
        seen.add(session.sid)
        state = states.get(session.sid)
        if state is not None and state.gone_at is not None and session.is_closed:
            continue  # closed, settled and left: nothing in it can change
        reason = _reason(state, session, now) or ("full" if everything else None)
        if reason is None:
            idle.append((_last_polled(state), session.sid, session))
            continue
        new_traffic = (
            state is None
            and watch_started_at is not None
            and _created_since(session, watch_started_at)
        )
        planned = Planned(
            service_sid,
            session.sid,
            reason,
            new_traffic=new_traffic,
            session=session,
            final=reason == "closed",
            marker=_marker_after(reason, session, now),
        )
        ranked.append(_rank(planned, state))
    ranked += [
        _rank(p, states.get(p.session_sid)) for p in _not_listed(service_sid, states, seen, only)
    ]
    idle.sort(key=lambda item: (item[0], item[1]))
    for _, sid, session in idle[: sweep_quota(len(seen), settings)]:
        sweep = Planned(service_sid, sid, "sweep", session=session, marker=session.activity_marker)
        ranked.append(_rank(sweep, states.get(sid)))
    ranked.sort(key=lambda item: item[:3])
    return [item[3] for item in ranked[:budget]]


def _not_listed(
    service_sid: str,
    states: Mapping[str, SessionState],
    seen: set[str],
    only: frozenset[str] | None,
) -> list[Planned]:
    """Sessions the list did not show: unlisted ones of an explicit watch, or vanished ones."""
    if only is not None:
        return [
            Planned(service_sid, sid, "unlisted")
            for sid in sorted(only - seen)
            if sid not in states or states[sid].gone_at is None
        ]
    return [
        Planned(service_sid, sid, "vanished", final=True)
        for sid, state in sorted(states.items())
        if sid not in seen and state.gone_at is None
    ]


def _last_polled(state: SessionState | None) -> float:
    return (state.last_success_at or 0.0) if state is not None else 0.0


def _rank(planned: Planned, state: SessionState | None) -> tuple[int, float, str, Planned]:
    """Return the plan with its sort key: priority, then the least recently polled first.

    Baselines go the most recently active first instead: their sessions were never polled.
    """
    reason = planned.reason
    if reason == "new" and not planned.new_traffic:
        reason = "baseline"  # what existed before the watch: a baseline like any other
    priority = _PRIORITY.get(reason, 0)
    if priority == _BASELINE:
        active = parse_time(planned.session.date_last_interaction) if planned.session else None
        order = -active.timestamp() if active is not None else math.inf
    else:
        order = _last_polled(state)
    return priority, order, planned.session_sid, planned
