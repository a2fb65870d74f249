"""The cycle job: a cycle of a Service whose lease is lost is stopped at once, and settled."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from poller.observe.health import HealthState
from poller.observe.outage import Outage
from poller.watch.cycle import CycleResult
from poller.watch.job import CycleJob


class Watch:
    service_sid = "KS1"
    sessions: tuple[str, ...] = ()
    all_sessions = True


class SlowCycle:
    """A cycle still calling Twilio: it runs until cancelled (or ``finish`` is set)."""

    watch = Watch()

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finish = asyncio.Event()
        self.cancelled = False

    async def run(self) -> CycleResult:
        self.started.set()
        try:
            await self.finish.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return CycleResult("KS1", planned=0, ok=0, failed=0, events=0)


async def test_a_lost_services_cycle_is_cancelled_and_settles() -> None:
    job, cycle = CycleJob(Outage(30.0)), SlowCycle()
    with capture_logs() as logs:
        running = asyncio.ensure_future(job.run(cycle, HealthState.for_interval(30.0), seconds=60))
        await cycle.started.wait()
        job.cancel("KS1")
        await job.settle("KS1")
        assert await running is None
    assert cycle.cancelled
    assert [e for e in logs if e["event"] == "cycle_cancelled"] == [
        {
            "event": "cycle_cancelled",
            "service_sid": "KS1",
            "reason": "lease lost",
            "log_level": "info",
        }
    ]
    job.cancel("KS1")  # nothing runs: harmless
    await job.settle("KS1")


async def test_the_drain_cancelling_the_job_itself_is_not_swallowed() -> None:
    job, cycle = CycleJob(Outage(30.0)), SlowCycle()
    running = asyncio.ensure_future(job.run(cycle, HealthState.for_interval(30.0), seconds=60))
    await cycle.started.wait()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert running.cancelled() and cycle.cancelled
