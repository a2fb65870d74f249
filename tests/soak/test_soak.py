"""The fault-injection soak, short form (``slow``), and the checks that judge any soak run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from poller.lab.receiver import Received
from poller.twilio.records import Fingerprint
from tests.soak.replicas import ReplicaSoakReport, ReplicaSoakSettings, run_replica_soak
from tests.soak.soak import CREATED, UPDATED, SoakReport, SoakSettings, judge, run_soak

SHORT = SoakSettings(traffic_seconds=40.0, seed=20261127)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_soak_loses_nothing_through_kills_faults_and_receiver_outages(tmp_path: Path) -> None:
    report = run_soak(SHORT, tmp_path)
    text = report.render()
    print(text)
    assert report.lost == 0, text
    assert report.problems() == [], text
    # The run really was hostile (otherwise "nothing lost" would prove little).
    assert report.kills >= 3, text
    assert report.finished_after_close >= 1, text  # a status change after its session closed
    assert report.outages >= 1, text
    assert report.interactions_created >= 50, text
    assert report.receiver_failures > 0, text
    injected = report.faults_injected
    assert sum(n for k, n in injected.items() if k.startswith("5")) > 0, text
    assert injected.get("429", 0) > 0, text
    assert sum(n for k, n in injected.items() if k.startswith("malformed")) > 0, text
    assert injected.get("slow", 0) > 0, text


REPLICAS_SHORT = ReplicaSoakSettings(
    traffic_seconds=30.0,
    seed=20261202,
    kill_gap_seconds=(2.0, 5.0),
    kill_kinds=("anywhere", "sigterm", "mid_delivery"),
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_replica_soak_on_postgresql_loses_nothing_through_kills_clean_restarts_and_faults(
    tmp_path: Path, pg_url: str
) -> None:
    report = run_replica_soak(REPLICAS_SHORT, tmp_path, pg_url)
    text = report.render()
    print(text)
    assert report.problems() == [], text
    assert report.delivery.lost == 0, text
    assert report.kills["anywhere"] >= 1 and report.kills["sigterm"] >= 1, text
    assert report.delivery.interactions_created >= 30, text
    assert report.faults.get("429", 0) > 0, text


def test_replica_soak_report_names_leases_left_pending_rows_and_a_bad_exit() -> None:
    report = ReplicaSoakReport(seed=0, caught_up=True, leases_left=0, pending_left=0)
    report.exit_codes = {"r1": 0, "r2": 0}
    assert report.problems() == []
    report.exit_codes["r2"] = -9
    report.leases_left, report.pending_left = 2, 1
    report.problems_found = ["polled at once: ..."]
    assert report.problems() == [
        "polled at once: ...",
        "a replica did not exit 0 on SIGTERM: {'r1': 0, 'r2': -9}",
        "2 leases still held after every replica stopped",
        "1 deliveries pending at the end",
    ]
    assert "problem: 2 leases still held" in report.render()


# -- the judge: a soak that loses or mislabels events must fail ------------------------------

A, B, OLD = "KI" + "a" * 32, "KI" + "b" * 32, "KI" + "0" * 32
QUEUED = Fingerprint("2026-11-27T10:00:00Z", None, "queued")
SENT = Fingerprint("2026-11-27T10:00:01Z", None, "sent")
DELIVERED = Fingerprint("2026-11-27T10:00:02Z", None, "delivered")


def _received(webhook_id: str, type_: str, sid: str, fp: Fingerprint, **extra: Any) -> Received:
    record = {
        "sid": sid,
        "date_updated": fp.date_updated,
        "inbound_resource_status": fp.inbound_resource_status,
        "outbound_resource_status": fp.outbound_resource_status,
        **extra,
    }
    body = {"type": type_, "timestamp": fp.date_updated, "data": {"interaction": record}}
    return Received("/hooks/soak", webhook_id, type_, body, signed=True)


def _judge(changes: list[tuple[str, Fingerprint]], received: list[Received]) -> SoakReport:
    report = SoakReport(seed=0)
    judge(report, changes, {OLD}, received)
    return report


def test_judge_passes_when_latest_states_arrived_and_intermediate_ones_were_folded() -> None:
    changes = [(A, QUEUED), (A, SENT), (A, DELIVERED), (B, QUEUED)]
    received = [
        _received("evt_1", CREATED, A, QUEUED),
        _received("evt_2", UPDATED, A, DELIVERED),
        _received("evt_3", CREATED, B, QUEUED),
    ]
    report = _judge(changes, received)
    assert report.lost == 0 and report.unexpected == [] and report.conflicting_ids == {}
    assert (report.states_made, report.states_observed) == (4, 3)
    assert report.delivered_by_type == {CREATED: 2, UPDATED: 1}


def test_judge_counts_an_interaction_never_delivered_as_created_as_lost() -> None:
    report = _judge([(A, QUEUED), (B, QUEUED)], [_received("evt_1", CREATED, A, QUEUED)])
    assert report.missing_created == [B]
    assert report.lost == 2  # B's creation and B's latest state


def test_judge_counts_a_latest_state_that_no_event_carried_as_lost() -> None:
    changes = [(A, QUEUED), (A, SENT), (A, DELIVERED)]
    report = _judge(
        changes, [_received("evt_1", CREATED, A, QUEUED), _received("evt_2", UPDATED, A, SENT)]
    )
    assert report.missing_created == []
    assert report.missing_latest == [(A, DELIVERED)]
    assert report.lost == 1


def test_judge_counts_a_redelivery_with_the_same_id_as_a_duplicate_only() -> None:
    first = _received("evt_1", CREATED, A, QUEUED)
    report = _judge([(A, QUEUED)], [first, first])
    assert (report.deliveries, report.delivered_unique, report.duplicates) == (2, 1, 1)
    assert report.conflicting_ids == {} and report.unexpected == []


def test_judge_flags_one_change_delivered_under_two_ids() -> None:
    report = _judge(
        [(A, QUEUED)],
        [_received("evt_1", CREATED, A, QUEUED), _received("evt_2", CREATED, A, QUEUED)],
    )
    (ids,) = report.conflicting_ids.values()
    assert ids == ["evt_1", "evt_2"]


def test_judge_flags_one_id_redelivered_with_another_body() -> None:
    report = _judge(
        [(A, QUEUED)],
        [_received("evt_1", CREATED, A, QUEUED), _received("evt_1", CREATED, A, QUEUED, x=1)],
    )
    assert report.unexpected == ["evt_1 redelivered with another body"]


def test_judge_flags_baselined_interactions_and_states_never_made() -> None:
    received = [
        _received("evt_1", CREATED, A, QUEUED),
        _received("evt_2", CREATED, OLD, QUEUED),
        _received("evt_3", UPDATED, A, SENT),
    ]
    report = _judge([(A, QUEUED)], received)
    assert f"{OLD} notified as created, but existed before" in report.unexpected
    assert f"{A} {tuple(SENT)} was never made by the simulator" in report.unexpected


def test_report_names_a_pending_outbox_and_a_bad_exit_as_problems() -> None:
    report = _judge([(A, QUEUED)], [_received("evt_1", CREATED, A, QUEUED)])
    report.caught_up, report.exit_code = True, 0
    report.outbox = {"pending": {}, "dead": {}}
    assert report.problems() == []
    report.exit_code = -9
    report.outbox = {"pending": {"soak": 1}, "dead": {}}
    assert report.problems() == [
        "the daemon did not exit 0 on SIGTERM",
        "the outbox was not empty at the end",
    ]
    assert "problems: the daemon did not exit 0" in report.render()
