"""What several replicas did, judged (pure): who polled which Service when, and what arrived.

"Polled by two replicas at once" is measured on the simulator's side, per Service, on cycle
windows. Each replica reaches the simulator through a port of its own, so every request is
noted as (replica, Service, route, start, end) (``Visit``). A replica's cycle of a Service
begins with its listing of the Service's Sessions (``all_sessions``); its window runs from the
start of that listing to the end of the last request the replica made for the Service before
its next listing. A listing retried inside one cycle only cuts that cycle in two, which makes
the windows smaller, never larger. Two windows of different replicas for one Service that
overlap in time are two replicas polling it at once. A hand-over leaves a gap between the old
owner's last window and the new owner's first (the lease expiring after a SIGKILL, a release
after a SIGTERM); a window cut short by a kill ends at its last request, so that gap is
allowed, and only a true overlap (a.start < b.end and b.start < a.end) counts.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from poller.lab.receiver import Received

LISTING = "sessions"  # the simulator's route name of a Service's Sessions listing


@dataclass(frozen=True, slots=True)
class Visit:
    """One Twilio API request as the simulator saw it (monotonic seconds)."""

    replica: str
    service_sid: str
    route: str
    started: float
    ended: float


@dataclass(frozen=True, slots=True)
class Window:
    """From a replica's listing of a Service to its last request before the next listing."""

    replica: str
    service_sid: str
    started: float
    ended: float
    requests: int

    def render(self, wall_offset: float = 0.0) -> str:
        """``replica service [start, end] (n requests)``, in wall time (to match the logs)."""
        start = _clock(self.started + wall_offset)
        end = _clock(self.ended + wall_offset)
        return f"{self.replica} {self.service_sid} [{start}, {end}] ({self.requests} requests)"


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(wall)) + f"{wall % 1:.3f}"[1:]


def cycle_windows(visits: Iterable[Visit]) -> list[Window]:
    """Every replica's cycle windows, per Service, in time order."""
    streams: defaultdict[tuple[str, str], list[Visit]] = defaultdict(list)
    for visit in visits:
        streams[(visit.replica, visit.service_sid)].append(visit)
    windows: list[Window] = []
    for (replica, service), stream in streams.items():
        stream.sort(key=lambda v: v.started)
        current: list[Visit] = []
        for visit in stream:
            if visit.route == LISTING and current:
                windows.append(_window(replica, service, current))
                current = []
            current.append(visit)
        if current:
            windows.append(_window(replica, service, current))
    return sorted(windows, key=lambda w: (w.service_sid, w.started))


def _window(replica: str, service: str, visits: Sequence[Visit]) -> Window:
    return Window(replica, service, visits[0].started, max(v.ended for v in visits), len(visits))


def overlaps(windows: Sequence[Window]) -> list[tuple[Window, Window]]:
    """Pairs of windows of two replicas on one Service that overlap in time."""
    found: list[tuple[Window, Window]] = []
    by_service: defaultdict[str, list[Window]] = defaultdict(list)
    for window in windows:
        by_service[window.service_sid].append(window)
    for group in by_service.values():
        group.sort(key=lambda w: w.started)
        for i, first in enumerate(group):
            for second in group[i + 1 :]:
                if second.started >= first.ended:
                    break
                if second.replica != first.replica:
                    found.append((first, second))
    return found


def first_visit(
    visits: Iterable[Visit], service_sid: str, after: float, *, not_by: str | None = None
) -> Visit | None:
    """The first request for ``service_sid`` after ``after`` by a replica other than ``not_by``."""
    later = [
        v
        for v in visits
        if v.service_sid == service_sid and v.started >= after and v.replica != not_by
    ]
    return min(later, key=lambda v: v.started, default=None)


# -- what arrived --------------------------------------------------------------------------------


def session_of(item: Received) -> str:
    return str(item.body["data"]["session_sid"])


def order_problems(
    received: Sequence[Received], made_order: Mapping[tuple[str, tuple[Any, ...]], int]
) -> list[str]:
    """Per (sink, session): each event's arrivals are contiguous (nothing redelivered after a
    later event), and each interaction's states arrive in the order the simulator made them.

    ``received``: one sink's deliveries in arrival order (the receiver's path says which
    replica sent each, not which sink). ``made_order``: (interaction sid, fingerprint tuple)
    -> its position in the simulator's change log.
    """
    problems: list[str] = []
    streams: defaultdict[str, list[Received]] = defaultdict(list)
    for item in received:
        streams[session_of(item)].append(item)
    for session, stream in streams.items():
        problems += _contiguous(session, [r.webhook_id for r in stream])
        problems += _states_in_order(session, stream, made_order)
    return problems


def _contiguous(session: str, ids: Sequence[str]) -> list[str]:
    finished: set[str] = set()
    problems: list[str] = []
    for previous, current in itertools.pairwise(ids):
        if current != previous:
            finished.add(previous)
            if current in finished:
                problems.append(f"{session}: {current} came again after a later event")
    return problems


def _states_in_order(
    session: str,
    stream: Sequence[Received],
    made_order: Mapping[tuple[str, tuple[Any, ...]], int],
) -> list[str]:
    last: dict[str, int] = {}
    problems: list[str] = []
    seen: set[str] = set()
    for item in stream:
        if item.webhook_id in seen:
            continue
        seen.add(item.webhook_id)
        record = item.body["data"]["interaction"]
        key = (
            str(record["sid"]),
            (
                record.get("date_updated"),
                record.get("inbound_resource_status"),
                record.get("outbound_resource_status"),
            ),
        )
        position = made_order.get(key)
        if position is None:
            continue  # a state never made is the soak judge's to report
        if position < last.get(key[0], -1):
            problems.append(f"{session}: {key[0]} {key[1]} arrived after a later state")
        last[key[0]] = max(position, last.get(key[0], -1))
    return problems


def ids_per_change(received: Iterable[Received]) -> dict[str, set[str]]:
    """(interaction, type, fingerprint) -> the webhook ids that carried it (one expected)."""
    ids: defaultdict[str, set[str]] = defaultdict(set)
    for item in received:
        record = item.body["data"]["interaction"]
        state = (
            record.get("date_updated"),
            record.get("inbound_resource_status"),
            record.get("outbound_resource_status"),
        )
        ids[f"{record['sid']} {item.event_type} {state}"].add(item.webhook_id)
    return dict(ids)
