"""The cycle log: each Service's latest cycle as the status page shows it, and its gauge."""

from __future__ import annotations

from poller.errors import CredentialsError
from poller.observe.cycles import CycleLog
from poller.observe.health import HealthState
from poller.observe.metrics import LAST_SERVICE_SUCCESS, POLL_INTERVAL, REGISTRY
from poller.observe.outage import Outage
from poller.watch.cycle import CycleResult
from poller.watch.job import CycleJob


class Watch:
    def __init__(self, sid: str) -> None:
        self.service_sid = sid
        self.sessions: tuple[str, ...] = ()
        self.all_sessions = True


class Cycle:
    """A cycle that returns ``result`` or raises ``error``."""

    def __init__(self, sid: str, result: CycleResult | None, error: Exception | None = None):
        self.watch = Watch(sid)
        self._result, self._error = result, error

    async def run(self) -> CycleResult:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def gauge(sid: str) -> float | None:
    return REGISTRY.get_sample_value(
        "poller_service_last_success_timestamp_seconds", {"service_sid": sid}
    )


def test_a_failure_keeps_the_last_success_and_counts_cycles() -> None:
    now = [1000.0]
    log = CycleLog(clock=lambda: now[0])
    log.record("KS9", polled=10, failed=0, events=2, succeeded=True)
    now[0] = 1030.0
    record = log.record("KS9", polled=0, failed=0, succeeded=False, error="timed out")
    assert (record.at, record.last_success_at, record.cycles) == (1030.0, 1000.0, 2)
    assert record.to_json()["error"] == "timed out"
    assert gauge("KS9") == 1000.0
    assert list(log.latest()) == ["KS9"]


def test_the_interval_is_told_to_the_metrics() -> None:
    CycleLog(17.0)
    assert REGISTRY.get_sample_value("poller_poll_interval_seconds") == 17.0
    assert POLL_INTERVAL._value.get() == 17.0  # the same gauge object
    assert LAST_SERVICE_SUCCESS._name == "poller_service_last_success_timestamp_seconds"


async def test_the_job_notes_successes_partial_failures_and_rejected_credentials() -> None:
    job, health = CycleJob(Outage(30.0)), HealthState.for_interval(30.0)
    ok = CycleResult("KS1", planned=5, ok=4, failed=1, events=3)
    assert await job.run(Cycle("KS1", ok), health, seconds=5) is None
    listing = CycleResult("KS2", planned=0, ok=0, failed=0, events=0, listing_failed=True)
    await job.run(Cycle("KS2", listing), health, seconds=5)
    refused = CredentialsError("Twilio refused the credentials (HTTP 401)")
    assert await job.run(Cycle("KS3", None, refused), health, seconds=5) is refused
    latest = job.cycles.latest()
    assert (latest["KS1"].polled, latest["KS1"].failed, latest["KS1"].succeeded) == (5, 1, True)
    assert latest["KS1"].events == 3
    assert (latest["KS2"].succeeded, latest["KS2"].error) == (False, "the Sessions list failed")
    assert (latest["KS3"].succeeded, latest["KS3"].error) == (False, "credentials rejected")
    assert gauge("KS1") is not None and gauge("KS3") is None


def test_a_service_kept_no_longer_is_forgotten_with_its_gauge() -> None:
    log = CycleLog()
    log.record("KS7", polled=1, failed=0, succeeded=True)
    log.record("KS8", polled=0, failed=0, succeeded=False, error="timed out")
    log.keep(["KS9"])
    assert log.latest() == {}
    assert gauge("KS7") is None


def test_a_service_owned_elsewhere_now_is_forgotten_alone() -> None:
    log = CycleLog()
    log.record("KS5", polled=1, failed=0, succeeded=True)
    log.record("KS6", polled=1, failed=0, succeeded=True)
    log.forget("KS5")
    assert list(log.latest()) == ["KS6"]
    assert gauge("KS5") is None and gauge("KS6") is not None
