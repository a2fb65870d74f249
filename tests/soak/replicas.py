"""The soak's PostgreSQL form: three replicas on one database, killed and restarted at random.

Every replica runs ``poller run`` on the same config (``tests.replica_world``), each through
a port of the simulator of its own, so who polled which Service when is counted on the
simulator's side. Live traffic on six Services, Twilio faults (5xx, 429, malformed bodies,
slow answers), receiver failures, and a seeded schedule of SIGKILLs (``anywhere``: a random
moment; ``mid_delivery``: from inside the receiver, the moment it accepted an event from the
replica to kill, before that replica could acknowledge it; ``sigterm``: a clean stop), each
followed by a restart. At the
end traffic stops (the faults go on), every expected event must arrive, every replica is
stopped with SIGTERM (exit 0) and must have released its leases.

Checked: nothing lost, one id per change (duplicates only under the same id), the order per
(sink, session), no Service polled by two replicas at once (``tests.replica_checks``), the
outbox empty at the end.

    python -m tests.soak.replicas --minutes 10 --seed 7 --keep /tmp/replica-soak
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from poller.lab.receiver import Received
from tests.replica_checks import first_visit
from tests.replica_world import World, replica_world
from tests.replicas_support import Replica, leases, pending
from tests.soak.soak import CountingSimulator, SoakReport, _counts
from tests.support import wait_for


@dataclass(frozen=True)
class ReplicaSoakSettings:
    traffic_seconds: float = 90.0
    seed: int = 1
    replicas: int = 3
    services: int = 6
    sessions: int = 2  # per Service
    history: int = 2
    traffic_per_second: float = 6.0
    kill_gap_seconds: tuple[float, float] = (3.0, 8.0)
    restart_pause_seconds: tuple[float, float] = (0.0, 2.0)
    kill_kinds: tuple[str, ...] = ("anywhere", "mid_delivery")
    armed_kill_timeout_seconds: float = 5.0
    error_5xx: float = 0.05
    rate_429: float = 0.05
    malformed: float = 0.03
    slow: float = 0.03
    receiver_fail_rate: float = 0.10
    lease_seconds: float = 3.0
    catch_up_timeout_seconds: float = 90.0


@dataclass
class ReplicaSoakReport:
    seed: int
    seconds: float = 0.0
    kills: Counter[str] = field(default_factory=Counter)
    takeovers: list[float] = field(default_factory=list)  # kill -> the next poll by anyone
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    leases_left: int = -1  # live leases after every replica stopped
    pending_left: int = -1
    caught_up: bool = False
    delivery: SoakReport = field(default_factory=lambda: SoakReport(seed=0))
    problems_found: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        problems = list(self.problems_found)
        if not self.caught_up:
            problems.append("the replicas did not catch up in time")
        if any(code != 0 for code in self.exit_codes.values()):
            problems.append(f"a replica did not exit 0 on SIGTERM: {self.exit_codes}")
        if self.leases_left != 0:
            problems.append(f"{self.leases_left} leases still held after every replica stopped")
        if self.pending_left != 0:
            problems.append(f"{self.pending_left} deliveries pending at the end")
        return problems

    def render(self) -> str:
        d = self.delivery
        worst = max(self.takeovers, default=0.0)
        lines = [
            f"replica soak report (seed {self.seed}, {self.seconds:.1f}s)",
            f"  interactions created          {d.interactions_created}",
            f"  events delivered (unique ids) {d.delivered_unique}",
            f"  deliveries accepted           {d.deliveries}",
            f"  duplicates (same id again)    {d.duplicates}",
            f"  kills                         {sum(self.kills.values())}"
            f"  ({_counts(dict(self.kills))})",
            f"  takeovers after a kill        {len(self.takeovers)}  (slowest {worst:.2f}s)",
            f"  twilio faults injected        {_counts(self.faults)}",
            f"  exit codes on SIGTERM         {self.exit_codes}",
            f"  leases / pending left         {self.leases_left} / {self.pending_left}",
            f"  caught up                     {self.caught_up}",
            f"  lost                          {d.lost}",
        ]
        lines += [f"    problem: {p}" for p in self.problems()[:20]]
        if self.problems():
            lines.append("  timeline (seconds after traffic started):")
            lines += [f"    {entry}" for entry in self.timeline]
        return "\n".join(lines)


class _DeliveryKill:
    """SIGKILL a replica from the receiver's thread when it delivered an event (armed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: Replica | None = None
        self.fired = threading.Event()

    def arm(self, replica: Replica) -> None:
        with self._lock:
            self._target = replica
            self.fired.clear()

    def disarm(self) -> None:
        with self._lock:
            self._target = None

    def hook(self, item: Received) -> None:
        with self._lock:
            target = self._target
            if target is None or item.path != f"/hooks/{target.name}":
                return
            target.signal(signal.SIGKILL)  # not reaped here: the soak's thread waits for it
            self._target = None
            self.fired.set()


class ReplicaSoak:
    def __init__(self, settings: ReplicaSoakSettings, folder: Path, url: str) -> None:
        self.s = settings
        self.folder = folder
        self.url = url
        self.rng = random.Random(f"{settings.seed}:replicas")
        self.report = ReplicaSoakReport(seed=settings.seed)
        self.switch = _DeliveryKill()
        # (Service, the replica killed holding it, when): measured against the visits at the end.
        self.held: list[tuple[str, str, float]] = []

    def run(self) -> ReplicaSoakReport:
        started = time.monotonic()
        s = self.s
        simulator = CountingSimulator(seed=s.seed)
        with replica_world(
            self.folder,
            self.url,
            replicas=s.replicas,
            services=s.services,
            sessions=s.sessions,
            history=s.history,
            seed=s.seed,
            simulator=simulator,
            lease_seconds=s.lease_seconds,
        ) as world:
            world.receiver.state.on_event = self.switch.hook
            world.replicas.start_all()
            world.baseline()
            self._live(world, simulator)
            self._finish(world)
            self.report.faults = dict(simulator.injected)
        self.report.seconds = time.monotonic() - started
        return self.report

    def _live(self, world: World, simulator: CountingSimulator) -> None:
        s = self.s
        simulator.fault_rates(
            error_5xx=s.error_5xx, rate_429=s.rate_429, malformed=s.malformed, slow=s.slow
        )
        world.receiver.call(
            lambda: setattr(world.receiver.state, "fail_rate", s.receiver_fail_rate)
        )
        begin = time.monotonic()
        turn = self.rng.randrange(len(s.kill_kinds))
        with world.traffic(s.traffic_per_second, seed=s.seed):
            at = begin + self.rng.uniform(*s.kill_gap_seconds)
            while at < begin + s.traffic_seconds - 1.0:
                self._until(world, at)
                kind = s.kill_kinds[turn % len(s.kill_kinds)]
                turn += 1
                self._kill_one(world, kind, begin)
                at += self.rng.uniform(*s.kill_gap_seconds)
            self._until(world, begin + s.traffic_seconds)
        world.receiver.call(lambda: setattr(world.receiver.state, "fail_rate", 0.0))

    def _until(self, world: World, deadline: float) -> None:
        """Pass the time to ``deadline``, failing at once if a replica died by itself."""
        while time.monotonic() < deadline:
            for replica in world.replicas.running():
                replica.ensure_alive()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _kill_one(self, world: World, kind: str, begin: float) -> None:
        running = world.replicas.running()
        if len(running) < 2:  # keep one alive: a restart comes first
            self._restart_all(world)
            return
        victim = self.rng.choice(running)
        held = [sid for sid, owner in world.owners().items() if owner == victim.name]
        killed_at = self._kill(victim, kind)
        self.report.timeline.append(
            f"{killed_at - begin:7.2f}  kill {victim.name} ({kind}) holding {len(held)}"
        )
        self.held += [(sid, victim.name, killed_at) for sid in held]
        # The replica stays down for a while: a schedule, not a condition to wait for.
        time.sleep(self.rng.uniform(*self.s.restart_pause_seconds))
        victim.start()

    def _kill(self, victim: Replica, kind: str) -> float:
        if kind == "mid_delivery":
            self.switch.arm(victim)
            if not self.switch.fired.wait(self.s.armed_kill_timeout_seconds):
                self.switch.disarm()
                if not self.switch.fired.is_set():
                    kind = "anywhere"
        killed_at = time.monotonic()
        if kind == "anywhere":
            victim.kill()
        elif kind == "sigterm":  # a clean restart: the leases go at once
            victim.signal(signal.SIGTERM)
            victim.wait(30)
        else:
            victim.wait(10)
        self.report.kills[kind] += 1
        return killed_at

    def _restart_all(self, world: World) -> None:
        for replica in world.replicas:
            if not replica.running():
                replica.start()

    def _finish(self, world: World) -> None:
        self._restart_all(world)
        # A replica just restarted has its SIGTERM handler only once it is up.
        wait_for(
            lambda: all(r.readyz() == 200 for r in world.replicas),
            timeout=60,
            what="every replica up again",
        )
        try:
            world.catch_up(self.s.catch_up_timeout_seconds)
            self.report.caught_up = True
        except AssertionError:
            self.report.caught_up = False
        world.sim.simulator.clear_faults()
        for replica in world.replicas:
            replica.signal(signal.SIGTERM)
        for replica in world.replicas:
            self.report.exit_codes[replica.name] = replica.wait(30)
        self.report.leases_left = sum(lease.live for lease in leases(self.url).values())
        self.report.pending_left = pending(self.url)
        self.report.delivery = world.report()
        self.report.problems_found = world.problems()
        visits = world.doorways.visits()
        for sid, _victim, killed_at in self.held:
            # By whoever comes first: another replica, or the victim's own restart.
            visit = first_visit(visits, sid, killed_at)
            if visit is not None:
                self.report.takeovers.append(visit.started - killed_at)


def run_replica_soak(settings: ReplicaSoakSettings, folder: Path, url: str) -> ReplicaSoakReport:
    """One run on the (empty) database at ``url``, its files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return ReplicaSoak(settings, folder, url).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.replicas", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long traffic runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=None, help="an empty PostgreSQL database (else a cluster)")
    parser.add_argument("--keep", default=None, help="folder for the config and logs")
    args = parser.parse_args(argv)
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    settings = ReplicaSoakSettings(traffic_seconds=args.minutes * 60, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="poller-replica-soak-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        if args.url:
            report = run_replica_soak(settings, folder, args.url)
        else:
            from tests.postgres import start_server

            server = start_server()
            try:
                url = next(iter(server.fresh_database()))
                report = run_replica_soak(settings, folder, url)
            finally:
                if server.cluster is not None:
                    server.cluster.remove()
    print(report.render(), flush=True)
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
