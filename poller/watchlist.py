"""Which sessions to poll: explicit lists, and every session of ``all_sessions`` Services.

"What already exists" is what was there when a watch began. A session created after its
``all_sessions`` watch began is new traffic: every one of its interactions is an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from poller.records import Session, parse_time
from poller.state import Store


class SessionSource(Protocol):
    async def list_sessions(self, service_sid: str) -> list[Session]: ...


class WatchLike(Protocol):
    @property
    def service_sid(self) -> str: ...
    @property
    def sessions(self) -> tuple[str, ...]: ...
    @property
    def all_sessions(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Target:
    """One session to poll, with what the Sessions list said of it (if it was listed)."""

    service_sid: str
    session_sid: str
    new_traffic: bool = False
    session: Session | None = None


def explicit_targets(watch: WatchLike) -> list[Target]:
    return [Target(watch.service_sid, sid) for sid in watch.sessions]


def listed_targets(
    service_sid: str, listed: Sequence[Session], store: Store, started_at: float
) -> tuple[list[Target], list[str]]:
    """Split a Sessions list into targets to poll and known sessions that disappeared.

    A closed session is polled once more (its final poll) and then left alone.
    """
    targets: list[Target] = []
    listed_sids = set()
    for session in listed:
        listed_sids.add(session.sid)
        known = store.session(session.sid)
        if known is not None and known.gone and session.is_closed:
            continue
        created = parse_time(session.date_created)
        new_traffic = created is not None and created.timestamp() > started_at
        targets.append(Target(service_sid, session.sid, new_traffic=new_traffic, session=session))
    vanished = [
        s.session_sid
        for s in store.sessions(service_sid)
        if s.session_sid not in listed_sids and not s.gone
    ]
    return targets, vanished


async def resolve(
    watches: Sequence[WatchLike], source: SessionSource, store: Store, now: float
) -> tuple[list[Target], list[Target]]:
    """Return (targets to poll, vanished sessions that need their final poll)."""
    targets: list[Target] = []
    vanished: list[Target] = []
    for watch in watches:
        if not watch.all_sessions:
            targets += explicit_targets(watch)
            continue
        started_at = store.watch_started_at(watch.service_sid, now)
        listed = await source.list_sessions(watch.service_sid)
        found, gone = listed_targets(watch.service_sid, listed, store, started_at)
        targets += found
        vanished += [Target(watch.service_sid, sid) for sid in gone]
    return targets, vanished
