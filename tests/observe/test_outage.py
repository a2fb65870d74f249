"""``Outage``: a database that does not answer is said once per interval, and its end once."""

from __future__ import annotations

from structlog.testing import capture_logs

from poller.errors import StateUnavailableError
from poller.observe.outage import Outage
from tests.clock import FakeClock

DOWN = StateUnavailableError("state database 127.0.0.1:5432 does not answer")


def test_failures_are_said_once_per_interval_with_how_many_they_stand_for() -> None:
    clock = FakeClock()
    outage = Outage(30.0, monotonic=clock.monotonic)
    with capture_logs() as logs:
        for _ in range(3):
            outage.report(DOWN, service_sid="KS1")
            clock.advance(10.0)  # at 0, 10 and 20: one line; at 30, the next
        outage.report(DOWN, service_sid="KS2")
    said = [(e["event"], e["failures"], e["service_sid"]) for e in logs]
    assert said == [("state_unavailable", 1, "KS1"), ("state_unavailable", 3, "KS2")]
    assert outage.ongoing


def test_the_end_of_an_outage_is_said_once_and_the_next_one_is_said_at_once() -> None:
    clock = FakeClock()
    outage = Outage(30.0, monotonic=clock.monotonic)
    with capture_logs() as logs:
        outage.over()  # no outage: nothing to say
        outage.report(DOWN)
        outage.report(DOWN)
        outage.over()
        outage.over()
        outage.report(DOWN)
    assert [(e["event"], e["failures"]) for e in logs] == [
        ("state_unavailable", 1),
        ("state_available", 1),
        ("state_unavailable", 1),
    ]
