"""The dispatcher in ``poller once`` mode: a retry due before the deadline is waited for.

Injected clocks: the dispatcher "sleeps" by moving the clock, so no real second passes. Every
test runs on the in-memory outbox and on the real SQLite store (the ``store`` fixture).
"""

from __future__ import annotations

import random
from typing import Any

from structlog.testing import capture_logs

from poller.delivery.dispatcher import Dispatcher
from poller.delivery.policy import DeliveryPolicy
from poller.delivery.results import SinkResult
from tests.clock import FakeClock
from tests.delivery.test_delivery import (
    POLICY,
    T0,
    ScriptedSink,
    StoreUnderTest,
    enqueue,
    pending,
    policy,
    retryable,
    session,
    store,
)
from tests.sink_contract_cases import make_event

__all__ = ["store"]  # the fixture, imported for the tests below

DEADLINE = T0 + 60.0


def once_dispatcher(
    store: StoreUnderTest, sinks: list[Any], clock: FakeClock, policy: DeliveryPolicy = POLICY
) -> Dispatcher:
    return Dispatcher(
        store,
        sinks,
        policy,
        clock=clock.time,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        rng=random.Random(7),
    )


async def test_retry_after_within_the_deadline_is_waited_for_and_delivered(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", script={event.id: [retryable(2.0), retryable(2.0)]})
    d = once_dispatcher(store, [sink], clock)
    result = await d.run_once(ignore_timers=True, deadline=DEADLINE)
    assert sink.delivered == [event.id]
    assert sink.sent == [event.id] * 3
    assert result.sinks["hook"] == SinkResult(delivered=1, failed=2)
    assert clock.slept[0] == 2.0  # Retry-After, not more
    assert 2.5 <= clock.slept[1] <= 5.0  # the backoff of the second retry is longer than 2 s
    assert await pending(store, "hook") == []


async def test_a_wait_past_the_deadline_is_not_made_and_the_event_stays_pending(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", script={event.id: [retryable(3600.0)]})
    result = await once_dispatcher(store, [sink], clock).run_once(
        ignore_timers=True, deadline=DEADLINE
    )
    assert clock.slept == [] and clock.time() == T0  # returned at once
    assert sink.sent == [event.id]
    assert result.sinks["hook"] == SinkResult(failed=1, pending_left=1)
    (row,) = await pending(store, "hook")
    assert row.next_attempt_at == T0 + 3600.0


async def test_the_first_retry_is_immediate_in_the_same_run(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", script={event.id: [retryable()]})
    result = await once_dispatcher(store, [sink], clock).run_once(
        ignore_timers=True, deadline=DEADLINE
    )
    assert sink.delivered == [event.id]
    assert clock.time() == T0
    assert result.sinks["hook"] == SinkResult(delivered=1, failed=1)


async def test_backoff_retries_stop_at_the_first_wait_that_ends_past_the_deadline(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", default=retryable())
    result = await once_dispatcher(store, [sink], clock).run_once(
        ignore_timers=True, deadline=DEADLINE
    )
    assert clock.time() < DEADLINE
    (row,) = await pending(store, "hook")
    assert row.next_attempt_at >= DEADLINE  # the next wait would pass the deadline
    assert row.attempts == len(sink.sent) >= 4  # immediate, then 2.5-5 s, 5-10 s, 10-20 s
    assert result.sinks["hook"].pending_left == 1


async def test_a_session_waiting_for_its_retry_never_holds_back_another(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    slow, fine = make_event(session_sid=session(1)), make_event(session_sid=session(2))
    behind_fine = make_event(session_sid=session(2))
    await enqueue(store, [slow, fine, behind_fine], ["hook"], T0)
    sink = ScriptedSink("hook", script={slow.id: [retryable(10.0)]})
    d = once_dispatcher(store, [sink], clock, policy(concurrency=1))
    result = await d.run_once(ignore_timers=True, deadline=DEADLINE)
    assert sink.delivered == [fine.id, behind_fine.id, slow.id]
    assert clock.slept == [10.0]
    assert result.sinks["hook"] == SinkResult(delivered=3, failed=1)


async def test_without_a_deadline_timers_ignored_still_means_one_attempt(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", script={event.id: [retryable(2.0)]})
    result = await once_dispatcher(store, [sink], clock).run_once(ignore_timers=True)
    assert clock.slept == [] and sink.sent == [event.id]
    assert result.sinks["hook"] == SinkResult(failed=1, pending_left=1)


async def test_a_digest_that_failed_is_retried_whole_within_the_deadline(
    store: StoreUnderTest,
) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    events = [make_event(session_sid=session(n)) for n in range(4)]
    await enqueue(store, events, ["chat"], T0)

    class FailsOnce(ScriptedSink):
        async def send_digest(self, batch: Any) -> None:
            self.default = retryable(1.0) if not self.digests else None
            await super().send_digest(batch)

    sink = FailsOnce("chat", digest_threshold=3)
    result = await once_dispatcher(store, [sink], clock).run_once(
        ignore_timers=True, deadline=DEADLINE
    )
    assert sink.digests == [[e.id for e in events]] * 2
    assert clock.slept == [1.0]
    assert result.sinks["chat"] == SinkResult(delivered=4, failed=4)


async def test_each_wait_is_logged_with_its_sink_and_length(store: StoreUnderTest) -> None:
    clock = FakeClock(wall=T0, monotonic=T0)
    event = make_event()
    await enqueue(store, [event], ["hook"], T0)
    sink = ScriptedSink("hook", script={event.id: [retryable(7.0)]})
    with capture_logs() as logs:
        await once_dispatcher(store, [sink], clock).run_once(ignore_timers=True, deadline=DEADLINE)
    waits = [e for e in logs if e["event"] == "delivery_retry_wait"]
    assert [(e["sink"], e["wait_seconds"], e["log_level"]) for e in waits] == [
        ("hook", 7.0, "info")
    ]
