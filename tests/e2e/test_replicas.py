"""Several ``poller run`` replicas on one PostgreSQL: takeovers, fencing, a clean hand-over.

Real processes against the simulator and a receiver, each replica through a port of its own
(``tests.replicas_support``), so that who polled what is counted on the simulator's side; how
"at once" is measured is written in ``tests.replica_checks``. Leases of 3 s (the minimum), a
poll every second. A bound on time is the issue's, plus ``SLACK``: two cores shared with other
work delay a process's wake-up and its first requests by a few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from poller.lab.receiver import Received, ReceiverThread
from poller.lab.simulator import SimulatorThread, run_traffic
from tests.postgres import Cluster
from tests.replica_checks import (
    Visit,
    cycle_windows,
    first_visit,
    order_problems,
    overlaps,
    session_of,
)
from tests.replica_world import World, replica_world
from tests.replicas_support import (
    Freeze,
    Replica,
    audit_mark,
    leases,
    written,
)
from tests.soak.replicas import ReplicaSoakSettings, run_replica_soak
from tests.soak.soak import SoakReport, judge, made, missing
from tests.support import run_poller, seeded_simulator, wait_for, write_config

LEASE = 3.0
INTERVAL = 1.0
SLACK = 1.0
HANDOVER = 2.0  # a clean stop: "another replica picks them up within a second or two"


def _owned(world: World) -> tuple[str, Replica, Replica]:
    """Once the leases spread: a Service (the first by sid), its owner, and another replica."""
    service, owner = sorted(world.settle().items())[0]
    other = next(r for r in world.replicas if r.name != owner)
    return service, world.replicas[owner], other


def _events_for(received: list[Received], sessions: set[str]) -> int:
    return sum(session_of(r) in sessions for r in received)


def _flowing(world: World, service: str, more: int = 3) -> None:
    """Wait until ``more`` further events of ``service`` arrived."""
    sessions = world.sessions_of(service)
    start = _events_for(world.received(), sessions)
    wait_for(
        lambda: _events_for(world.received(), sessions) >= start + more,
        timeout=30,
        what=f"{more} more events of {service}",
    )


@pytest.mark.slow
def test_sigkill_of_an_owner_hands_its_service_over_within_a_lease_and_an_interval(
    tmp_path: Path, pg_url: str
) -> None:
    with replica_world(tmp_path, pg_url, replicas=2, services=2) as world:
        world.replicas.start_all()
        world.baseline()
        with world.traffic(rate=6):
            service, owner, other = _owned(world)
            _flowing(world, service)
            killed_at = time.monotonic()
            owner.kill()

            def taken() -> Visit | None:
                return first_visit(world.doorways.visits(), service, killed_at, not_by=owner.name)

            wait_for(taken, timeout=LEASE * 4, what=f"{other.name} to poll {service}")
            visit = taken()
            assert visit is not None
            takeover = visit.started - killed_at
            _flowing(world, service)
        world.catch_up()
        print(f"takeover after SIGKILL: {takeover:.2f}s (lease {LEASE}s, interval {INTERVAL}s)")
        assert visit.replica == other.name
        assert takeover <= LEASE + INTERVAL + SLACK
        assert world.owners() == dict.fromkeys(world.services, other.name)
        assert other.logged("lease_acquired", service_sid=service, replica=other.name)
        assert world.problems() == []


@pytest.mark.slow
def test_a_paused_owner_woken_past_its_lease_commits_and_delivers_nothing_and_steps_down(
    tmp_path: Path, pg_url: str
) -> None:
    # One Service: once the other replica took it, the woken one stays a standby (nothing to
    # rebalance), so anything it writes or delivers for the Service afterwards is stale.
    with replica_world(tmp_path, pg_url, replicas=2, services=1, sessions=4) as world:
        world.replicas.start_all()
        world.baseline()
        with world.traffic(rate=6):
            service, owner, other = _owned(world)
            sessions = world.sessions_of(service)
            _flowing(world, service)
            old_epoch = leases(pg_url)[service].epoch
            # Paused with a request for the Service in flight: it wakes holding an answer.
            freeze = Freeze(world.doorways)
            freeze.arm(owner, service)
            assert freeze.fired.wait(10), f"{owner.name} asked nothing of {service}"
            wait_for(
                lambda: world.owners().get(service) == other.name,
                timeout=LEASE * 4,
                what=f"{other.name} to take {service} from the paused {owner.name}",
            )
            assert leases(pg_url)[service].epoch > old_epoch
            mark, got = audit_mark(pg_url), len(world.received())
            woken_at = time.monotonic()
            owner.resume()
            wait_for(
                lambda: owner.logged("lease_lost", service_sid=service, replica=owner.name),
                timeout=LEASE * 2,
                what=f"{owner.name} to log lease_lost for {service}",
            )
            _flowing(world, service)  # the new owner goes on; the woken one had time to try
        world.catch_up()
        owner.ensure_alive()  # stepped down, still running
        (lost,) = owner.logged("lease_lost", service_sid=service, replica=owner.name)
        assert lost["epoch"] == old_epoch
        # The audit can tell replicas apart (else the check below would prove nothing).
        assert any(w.by(other.name) for w in written(pg_url, mark))
        # Nothing written for the Service by the woken replica: the other holds the lease.
        stale = [
            w
            for w in written(pg_url, mark)
            if w.by(owner.name) and (w.service_sid == service or w.session_sid in sessions)
        ]
        assert stale == []
        late = world.received()[got:]
        assert [
            r for r in late if r.path == f"/hooks/{owner.name}" and session_of(r) in sessions
        ] == []
        zombie = [
            v
            for v in world.doorways.visits()
            if v.replica == owner.name and v.service_sid == service and v.started >= woken_at
        ]
        print(f"Twilio requests for {service} by the woken {owner.name}: {len(zombie)}")
        assert world.problems(polled_at_once=False) == []


@pytest.mark.slow
def test_sigterm_releases_at_once_and_the_other_replica_takes_over_within_two_seconds(
    tmp_path: Path, pg_url: str
) -> None:
    with replica_world(tmp_path, pg_url, replicas=2, services=2) as world:
        world.replicas.start_all()
        world.baseline()
        with world.traffic(rate=6):
            service, owner, other = _owned(world)
            _flowing(world, service)
            stopped_at = time.monotonic()
            owner.signal(signal.SIGTERM)
            wait_for(
                lambda: world.owners().get(service) == other.name,
                timeout=LEASE * 3,
                what=f"{other.name} to take {service}",
            )
            acquired = time.monotonic() - stopped_at
            assert owner.wait(30) == 0
            _flowing(world, service)
        world.catch_up()
        print(f"takeover after SIGTERM: {acquired:.2f}s")
        assert owner.logged("lease_released", service_sid=service, replica=owner.name)
        assert other.logged("lease_acquired", service_sid=service, replica=other.name)
        assert acquired <= HANDOVER + SLACK
        assert world.problems() == []
        assert world.duplicate_ids() == {}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_three_replicas_six_services_random_kills_lose_nothing_and_never_poll_together(
    tmp_path: Path, pg_url: str
) -> None:
    settings = ReplicaSoakSettings(traffic_seconds=90.0, seed=20261201)
    report = run_replica_soak(settings, tmp_path, pg_url)
    text = report.render()
    print(text)
    assert report.problems() == [], text
    assert report.delivery.lost == 0, text
    # The run really was hostile (otherwise "nothing lost" would prove little).
    assert sum(report.kills.values()) >= 8, text
    assert report.kills["mid_delivery"] >= 1, text
    assert len(report.takeovers) >= 3, text  # kills of replicas that held Services
    assert report.delivery.interactions_created >= 100, text
    assert sum(n for k, n in report.faults.items() if k.startswith("5")) > 0, text


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_postgresql_stopped_and_started_under_a_running_pair_loses_nothing(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    with replica_world(tmp_path, pg_cluster.url, replicas=2, services=2) as world:
        world.replicas.start_all()
        world.baseline()
        with world.traffic(rate=4):
            _flowing(world, world.services[0])
            down_at = time.monotonic()
            pg_cluster.stop()
            wait_for(
                lambda: all(r.logged("state_unavailable") for r in world.replicas),
                timeout=LEASE * 4,
                what="both replicas to log state_unavailable",
            )
            wait_for(
                lambda: all(r.readyz() not in (200, None) for r in world.replicas),
                timeout=LEASE * 4,
                what="/readyz to say not ready on both",
            )
            made = len(world.changes())
            wait_for(lambda: len(world.changes()) >= made + 5, what="traffic while it is down")
            for replica in world.replicas:
                replica.ensure_alive()
            pg_cluster.start()
            outage = time.monotonic() - down_at
            wait_for(
                lambda: all(r.readyz() == 200 for r in world.replicas),
                timeout=30,
                what="both replicas ready again",
            )
            wait_for(
                lambda: len(world.owners()) == len(world.services),
                timeout=LEASE * 4,
                what="every Service owned again",
            )
            _flowing(world, world.services[0])
        world.catch_up(90)
        for replica in world.replicas:
            replica.ensure_alive()
            # Said once per interval, not once per attempt.
            assert len(replica.logged("state_unavailable")) <= outage / INTERVAL + 3
        assert world.problems() == []


@pytest.mark.slow
def test_a_sqlite_state_in_use_migrated_to_postgresql_sends_nothing_twice_and_misses_nothing(
    tmp_path: Path, pg_url: str, receiver: ReceiverThread
) -> None:
    with seeded_simulator(17, sessions=3, per_session=2) as sim:
        sqlite_config = write_config(
            tmp_path, sim, receiver.base_url, http={"listen": "127.0.0.1:0"}
        )
        daemon = Replica("sqlite", sqlite_config, tmp_path / "sqlite", sim.base_url, "")
        daemon.start()
        try:
            wait_for(lambda: daemon.readyz() == 200, what="the SQLite daemon's baseline")
            mark, before = len(sim.simulator.change_log()), set(sim.simulator.interaction_sids())
            with _traffic(sim):
                wait_for(lambda: len(receiver.received()) >= 3, what="events to flow")
                receiver.call(lambda: setattr(receiver.state, "status", 503))
                tried = receiver.call(lambda: receiver.state.attempts)
                wait_for(
                    lambda: receiver.call(lambda: receiver.state.attempts) >= tried + 3,
                    what="deliveries failing (events pending)",
                )
            assert daemon.stop() == 0
        finally:
            daemon.kill()
        # Changes while no poller runs: a re-baseline would swallow them.
        session = sim.simulator.session_sids()[0]
        for _ in range(2):
            sim.simulator.add_interaction(sim.simulator.service_sids()[0], session, body="later")
        migrated = run_poller("state", "migrate", "-c", str(sqlite_config), "--to", pg_url)
        assert migrated.returncode == 0, migrated.stderr
        config = yaml.safe_load(sqlite_config.read_text())
        config["state"] = {"url": pg_url, "lease_seconds": LEASE}
        pg_config = tmp_path / "pg.yaml"
        pg_config.write_text(yaml.safe_dump(config))
        receiver.call(lambda: setattr(receiver.state, "status", 204))
        replica = Replica("r1", pg_config, tmp_path / "r1", sim.base_url, "")
        replica.start()
        try:
            expected = made(
                [(c.interaction_sid, c.fingerprint) for c in sim.simulator.change_log(mark)], before
            )
            wait_for(
                lambda: missing(expected, receiver.received()) == ([], []),
                timeout=60,
                what="every event, from the migrated outbox and after",
            )
            assert replica.stop() == 0
        finally:
            replica.kill()
    counts = Counter(r.webhook_id for r in receiver.received())
    assert [i for i, n in counts.items() if n > 1] == []
    report = SoakReport(seed=0)
    judge(
        report,
        [(c.interaction_sid, c.fingerprint) for c in sim.simulator.change_log(mark)],
        before,
        receiver.received(),
    )
    assert report.lost == 0 and report.unexpected == [] and report.conflicting_ids == {}


@contextlib.contextmanager
def _traffic(sim: SimulatorThread) -> Iterator[None]:
    stop = sim.submit(_event()).result(timeout=10)
    running = sim.submit(run_traffic(sim.simulator, 6, stop=stop, seed=9))
    try:
        yield
    finally:
        sim.submit(_set(stop)).result(timeout=10)
        running.result(timeout=10)


async def _event() -> asyncio.Event:
    return asyncio.Event()


async def _set(event: asyncio.Event) -> None:
    event.set()


# -- the judge of "at once" ---------------------------------------------------------------------


def _visits(replica: str, *spans: tuple[float, float], service: str = "KS1") -> list[Visit]:
    """One cycle per span: a listing at its start, an interactions request at its end."""
    out: list[Visit] = []
    for start, end in spans:
        out.append(Visit(replica, service, "sessions", start, start + 0.01))
        out.append(Visit(replica, service, "interactions", end - 0.01, end))
    return out


def test_cycles_of_two_replicas_one_after_the_other_do_not_overlap() -> None:
    visits = _visits("r1", (0, 0.5), (1, 1.5)) + _visits("r2", (5, 5.5), (6, 6.4))
    windows = cycle_windows(visits)
    assert [(w.replica, w.started, w.ended) for w in windows] == [
        ("r1", 0, 0.5),
        ("r1", 1, 1.5),
        ("r2", 5, 5.5),
        ("r2", 6, 6.4),
    ]
    assert overlaps(windows) == []


def test_a_request_of_another_replica_inside_a_cycle_is_polling_at_once() -> None:
    visits = [*_visits("r1", (0, 0.5), (1, 2.0)), Visit("r2", "KS1", "interactions", 1.5, 1.6)]
    (pair,) = overlaps(cycle_windows(visits))
    assert {pair[0].replica, pair[1].replica} == {"r1", "r2"}


def test_one_replica_on_two_services_and_two_on_different_services_are_not_at_once() -> None:
    visits = _visits("r1", (0, 1), service="KS1") + _visits("r1", (0, 1), service="KS2")
    visits += _visits("r2", (0.2, 0.8), service="KS3")
    assert overlaps(cycle_windows(visits)) == []


def test_the_first_visit_after_a_kill_is_the_other_replicas() -> None:
    visits = _visits("r1", (0, 0.5), (1, 1.5)) + _visits("r2", (4.2, 4.5))
    found = first_visit(visits, "KS1", 1.2, not_by="r1")
    assert found is not None and (found.replica, found.started) == ("r2", 4.2)
    assert first_visit(visits, "KS2", 0) is None


def _arrived(webhook_id: str, session: str, sid: str, status: str) -> Received:
    record = {"sid": sid, "date_updated": "t", "inbound_resource_status": None}
    record["outbound_resource_status"] = status
    body = {"type": "interaction.updated", "data": {"session_sid": session, "interaction": record}}
    return Received("/hooks/r1", webhook_id, "interaction.updated", body, signed=True)


def test_order_holds_with_a_redelivery_in_place_and_breaks_when_an_event_comes_back_later() -> None:
    made = {("KI1", ("t", None, "queued")): 0, ("KI1", ("t", None, "sent")): 1}
    queued, sent = _arrived("e1", "KC1", "KI1", "queued"), _arrived("e2", "KC1", "KI1", "sent")
    assert order_problems([queued, queued, sent], made) == []
    assert order_problems([queued, sent, queued], made) == [
        "KC1: e1 came again after a later event"
    ]
    assert order_problems([sent, queued], made) == [
        "KC1: KI1 ('t', None, 'queued') arrived after a later state"
    ]
