"""Token buckets: rate, burst, FIFO fairness and pauses, on a fake clock."""

from __future__ import annotations

import asyncio
import math

import pytest

from poller.twilio.ratelimit import RateLimiters, TokenBucket
from tests.clock import FakeClock


async def until(condition: object) -> None:
    """Yield to the loop until ``condition()`` holds (bounded, so a bug fails instead of hangs)."""
    assert callable(condition)
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def acquire_times(bucket: TokenBucket, time: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        await bucket.acquire()
        times.append(time.monotonic() - 100.0)
    return times


async def test_burst_is_served_at_once_then_tokens_come_at_the_rate() -> None:
    time = FakeClock(monotonic=100.0)
    bucket = TokenBucket(rate=4.0, burst=3.0, clock=time.monotonic, sleep=time.sleep)
    times = await acquire_times(bucket, time, 6)
    assert times == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5, 0.75])


async def test_idle_time_refills_no_more_than_the_burst() -> None:
    time = FakeClock(monotonic=100.0)
    bucket = TokenBucket(rate=1.0, burst=2.0, clock=time.monotonic, sleep=time.sleep)
    await acquire_times(bucket, time, 2)
    time.advance(3600.0)
    times = await acquire_times(bucket, time, 3)
    assert times == pytest.approx([3600.0, 3600.0, 3601.0])


async def test_concurrent_acquirers_are_served_in_arrival_order_at_the_rate() -> None:
    time = FakeClock(monotonic=100.0)
    bucket = TokenBucket(rate=10.0, burst=1.0, clock=time.monotonic, sleep=time.sleep)
    served: list[tuple[int, float]] = []

    async def take(index: int) -> None:
        await bucket.acquire()
        served.append((index, time.monotonic() - 100.0))

    await asyncio.gather(*(take(i) for i in range(12)))
    assert [index for index, _ in served] == list(range(12))
    assert [at for _, at in served] == pytest.approx([i / 10 for i in range(12)])


async def test_a_late_arrival_cannot_take_the_token_an_earlier_waiter_is_sleeping_for() -> None:
    time = FakeClock(monotonic=0.0, auto=False)
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=time.monotonic, sleep=time.sleep)
    await bucket.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        await bucket.acquire()
        order.append(name)

    early = asyncio.create_task(take("early"))
    await until(lambda: time.sleeping == 1)
    # The token is due but the early waiter has not run yet: a late arrival must queue behind it.
    time.advance(1.0, wake=False)
    late = asyncio.create_task(take("late"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == []
    time.advance(0.0)
    await early
    await until(lambda: time.sleeping == 1)
    time.advance(1.0)
    await late
    assert order == ["early", "late"]


async def test_pause_until_holds_every_acquirer_back_then_restarts_with_one_token() -> None:
    time = FakeClock(monotonic=100.0)
    bucket = TokenBucket(rate=10.0, burst=10.0, clock=time.monotonic, sleep=time.sleep)
    bucket.pause_until(105.0)
    times = await acquire_times(bucket, time, 3)
    assert times == pytest.approx([5.0, 5.1, 5.2])


async def test_a_shorter_pause_never_shortens_a_longer_one() -> None:
    time = FakeClock(monotonic=100.0)
    bucket = TokenBucket(rate=10.0, burst=10.0, clock=time.monotonic, sleep=time.sleep)
    bucket.pause_until(130.0)
    bucket.pause_until(110.0)
    assert bucket.paused_until == 130.0
    assert await acquire_times(bucket, time, 1) == pytest.approx([30.0])


async def test_a_pause_set_while_acquirers_wait_delays_them_too() -> None:
    time = FakeClock(monotonic=0.0, auto=False)
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=time.monotonic, sleep=time.sleep)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await until(lambda: time.sleeping == 1)
    bucket.pause_until(20.0)
    time.advance(1.0)
    await until(lambda: time.sleeping == 1)
    assert not waiter.done()
    time.advance(19.0)
    await waiter
    assert time.monotonic() == 20.0


async def test_a_cancelled_waiter_lets_the_next_one_through() -> None:
    time = FakeClock(monotonic=0.0, auto=False)
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=time.monotonic, sleep=time.sleep)
    await bucket.acquire()
    first = asyncio.create_task(bucket.acquire())
    second = asyncio.create_task(bucket.acquire())
    await until(lambda: time.sleeping == 1)
    first.cancel()
    await until(lambda: first.done() and time.sleeping == 1)
    time.advance(1.0)
    await second
    assert first.cancelled()


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 1.0), (math.inf, 1.0), (1, 0.5)])
def test_invalid_rate_or_burst_is_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match=r"rate|burst"):
        TokenBucket(rate, burst)


async def test_limiters_give_each_service_its_own_bucket_created_once() -> None:
    time = FakeClock(monotonic=100.0)
    limiters = RateLimiters(1.0, clock=time.monotonic, sleep=time.sleep)
    assert limiters.bucket("KS1") is limiters.bucket("KS1")
    assert limiters.bucket("KS1") is not limiters.bucket("KS2")
    await limiters.acquire("KS1")
    await limiters.acquire("KS2")
    assert time.monotonic() == 100.0
    await limiters.acquire("KS1")
    assert time.monotonic() == 101.0


@pytest.mark.parametrize(("rate", "burst"), [(0.5, 1.0), (25.0, 25.0)])
def test_limiters_default_burst_is_the_rate_but_at_least_one(rate: float, burst: float) -> None:
    bucket = RateLimiters(rate).bucket("KS1")
    assert (bucket.rate, bucket.burst) == (rate, burst)


async def test_pausing_one_service_leaves_the_others_alone() -> None:
    time = FakeClock(monotonic=100.0)
    limiters = RateLimiters(5.0, clock=time.monotonic, sleep=time.sleep)
    limiters.pause_until("KS1", 160.0)
    await limiters.acquire("KS2")
    assert time.monotonic() == 100.0
    await limiters.acquire("KS1")
    assert time.monotonic() == 160.0


def test_limiters_refuse_a_bad_rate_at_construction() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiters(0.0)
