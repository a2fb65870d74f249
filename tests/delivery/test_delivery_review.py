"""Per-session order around failed digests, and a disabled note on a full disk.

Found by reviewing the merged dispatcher: a row tried in the current pass (its retry still to
come) must hold its session back from a digest, and a note the state cannot clear must not keep
a failure from being settled.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from pathlib import Path

from poller.delivery.dispatcher import Dispatcher
from poller.errors import StateError
from poller.events import Event
from poller.state.models import DisabledSink
from poller.state.sqlite.store import SqliteStore
from tests.clock import FakeClock
from tests.delivery.test_delivery import (
    POLICY,
    T0,
    ScriptedSink,
    enqueue,
    retryable,
    session,
    store,
)
from tests.delivery.test_delivery_holds import DISK_FULL, FullDisk
from tests.delivery.test_delivery_once import once_dispatcher
from tests.sink_contract_cases import make_event

__all__ = ["store"]  # the fixture, imported for the tests below


class DigestFailingTwice(ScriptedSink):
    """A digesting sink whose first two digests fail; records the order events arrive in."""

    def __init__(self) -> None:
        super().__init__("chat", digest_threshold=2)
        self.failures_left = 2
        self.order: list[str] = []

    async def send(self, event: Event) -> None:
        await super().send(event)
        self.order.append(event.id)

    async def send_digest(self, events: Sequence[Event]) -> None:
        self.digests.append([e.id for e in events])
        if self.failures_left:
            self.failures_left -= 1
            raise retryable()
        self.order.extend(e.id for e in events)


def in_session_order(events: Sequence[Event], order: Sequence[str]) -> bool:
    position = {event_id: n for n, event_id in enumerate(order)}
    for sid in {e.session_sid for e in events}:
        sent = [position[e.id] for e in events if e.session_sid == sid and e.id in position]
        if sent != sorted(sent):
            return False
    return True


async def test_once_retrying_a_failed_digest_keeps_each_sessions_order(store: SqliteStore) -> None:
    events = [make_event(session_sid=session(s)) for s in range(1, 4) for _ in range(3)]
    await enqueue(store, events, ["chat"], T0)
    sink = DigestFailingTwice()
    dispatcher = once_dispatcher(store, [sink], FakeClock(wall=T0, monotonic=T0))
    await dispatcher.run_once(ignore_timers=True, deadline=T0 + 60)
    assert set(sink.order) == {e.id for e in events}
    assert in_session_order(events, sink.order)


async def test_a_head_waiting_for_its_retry_holds_its_session_out_of_a_digest(
    store: SqliteStore,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    a1, a2 = make_event(session_sid=session(1)), make_event(session_sid=session(1))
    others = [make_event(session_sid=session(2)) for _ in range(3)]
    await enqueue(store, [a1, a2], ["chat"], T0)
    order: list[str] = []

    class Recording(ScriptedSink):
        async def send(self, event: Event) -> None:
            if event.id == a1.id and not self.sent:
                await enqueue(store, others, ["chat"], T0)  # a poll lands while a1 is in flight
            await super().send(event)
            order.append(event.id)

        async def send_digest(self, events: Sequence[Event]) -> None:
            await super().send_digest(events)
            order.extend(e.id for e in events)

    sink = Recording("chat", digest_threshold=3, script={a1.id: [retryable()]})
    dispatcher = Dispatcher(
        store, [sink], POLICY, clock=clock.time, monotonic=clock.monotonic, rng=random.Random(1)
    )
    await dispatcher.run_once()
    assert in_session_order([a1, a2], order)


class FullDiskWithNote(FullDisk):
    """A full disk on which the note of a sink disabled earlier cannot be cleared either."""

    async def clear_sink_disabled(self, sink: str | None = None) -> list[DisabledSink]:
        if self.full:
            raise StateError(DISK_FULL)
        return list(await self.inner.clear_sink_disabled(sink))


async def test_a_failure_is_held_even_when_the_disabled_note_cannot_be_cleared(
    tmp_path: Path,
) -> None:
    async with SqliteStore.open(tmp_path / "state.db") as state:
        # a note left by an earlier process (the sink's URL was fixed since, then a restart)
        await state.record_sink_disabled("hook", status=410, reason="gone", now=T0 - 100)
        await enqueue(state, [make_event(session_sid=session(1))], ["hook"], T0)
        sink = ScriptedSink("hook", default=retryable(retry_after=300.0))
        dispatcher = Dispatcher(
            FullDiskWithNote(state),
            [sink],
            POLICY,
            clock=FakeClock(wall=T0, monotonic=T0).time,
            rng=random.Random(1),
        )
        for _ in range(5):
            with contextlib.suppress(StateError):
                await dispatcher.run_once()
    assert len(sink.sent) == 1  # held for its Retry-After, not sent again on every pass
