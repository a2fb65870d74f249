"""What the state contract suite builds its cases from: SIDs, fingerprints, events, helpers."""

from __future__ import annotations

from collections.abc import Sequence

from poller.events import Event, EventType, event_id
from poller.state.base import StateStore
from poller.state.models import Delivery, SessionState
from poller.twilio.records import Fingerprint, SessionFingerprint

SERVICE = "KS" + "a" * 32
OTHER_SERVICE = "KS" + "b" * 32
SESSION_A = "KC" + "a" * 32
SESSION_B = "KC" + "b" * 32
SESSION_C = "KC" + "c" * 32
FP = Fingerprint("2026-11-27T10:00:00Z", "received", "delivered")
OPEN = SessionFingerprint("open", None, "2026-12-01T00:00:00Z", None)
CLOSED = SessionFingerprint("closed", "api", "2026-12-01T00:00:00Z", "2026-11-30T10:00:00Z")


def make_event(session_sid: str, n: int, *, updated: bool = False) -> Event:
    """The ``n``-th interaction event of ``session_sid`` (created, or ``updated``)."""
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


async def enqueue(
    store: StateStore,
    session_sid: str,
    events: Sequence[Event],
    sinks: Sequence[str],
    now: float,
) -> None:
    """Commit a poll of ``session_sid`` that found ``events``, each going to ``sinks``."""
    fetched = dict(await store.known(session_sid))
    fetched.update({e.interaction_sid: FP for e in events})
    await store.commit_poll(
        SERVICE, session_sid, fetched=fetched, events=[(e, sinks) for e in events], now=now
    )


async def session_of(store: StateStore, session_sid: str) -> SessionState | None:
    """The stored state of one session (None: not stored), read through ``sessions()``."""
    found = [s for s in await store.sessions() if s.session_sid == session_sid]
    return found[0] if found else None


async def watched(store: StateStore, session_sid: str) -> SessionState:
    """The stored state of a session the case stored."""
    state = await session_of(store, session_sid)
    assert state is not None, session_sid
    return state


def ids_of(deliveries: Sequence[Delivery]) -> list[int]:
    return [d.id for d in deliveries]


def events_of(deliveries: Sequence[Delivery]) -> list[str]:
    return [d.event.id for d in deliveries]
