"""A world for replica tests: a seeded simulator, doorways, a receiver, N replicas, one database.

with replica_world(tmp_path, pg_url, replicas=2, services=2) as world:
    world.replicas.start_all()
    world.baseline()
    with world.traffic(rate=6):
        ...
    world.catch_up()
    assert world.problems() == []
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poller.lab.receiver import Received, ReceiverState, ReceiverThread
from poller.lab.simulator import Simulator, SimulatorThread, run_traffic
from tests.replica_checks import (
    cycle_windows,
    ids_per_change,
    order_problems,
    overlaps,
)
from tests.replicas_support import (
    Doorways,
    Replicas,
    baselined,
    install_audit,
    migrate,
    owners,
    replica_config,
    unowned_writes,
)
from tests.soak.soak import SoakReport, judge, made, missing
from tests.support import SECRET, wait_for


@dataclass
class World:
    sim: SimulatorThread
    doorways: Doorways
    receiver: ReceiverThread
    url: str
    replicas: Replicas
    services: list[str]
    sessions: int  # seeded, in all
    mark: int = 0  # the simulator's change log at the baseline
    before: set[str] = field(default_factory=set)  # interactions that existed then

    def baseline(self, timeout: float = 60) -> None:
        """Wait until every seeded session is baselined and every Service has an owner."""

        def done() -> bool:
            for replica in self.replicas:
                if replica.proc is not None and not replica.running():
                    replica.ensure_alive()
            return baselined(self.url) >= self.sessions and len(self.owners()) == len(self.services)

        wait_for(done, timeout, "every session baselined and every Service owned")
        self.mark = len(self.sim.simulator.change_log())
        self.before = set(self.sim.simulator.interaction_sids())

    def owners(self) -> dict[str, str]:
        return owners(self.url)

    def settle(self, timeout: float = 30) -> dict[str, str]:
        """Wait until every Service is owned and every running replica holds a share (at least
        one Service when there are enough, at most ceil(services / replicas) + 1)."""

        def spread() -> bool:
            held = self.owners()
            names = [r.name for r in self.replicas.running()]
            share = -(-len(self.services) // max(1, len(names))) + 1
            low = 1 if len(self.services) >= len(names) else 0
            counts = [list(held.values()).count(name) for name in names]
            return len(held) == len(self.services) and all(low <= n <= share for n in counts)

        wait_for(spread, timeout, "the leases to spread over the replicas")
        return self.owners()

    @contextlib.contextmanager
    def traffic(self, rate: float, seed: int = 5) -> Iterator[None]:
        """Live traffic on every session while the block runs."""
        stop = self.sim.submit(_event()).result(timeout=10)
        running = self.sim.submit(run_traffic(self.sim.simulator, rate, stop=stop, seed=seed))
        try:
            yield
        finally:
            self.sim.submit(_set(stop)).result(timeout=10)
            running.result(timeout=10)

    def changes(self) -> list[tuple[str, Any]]:
        return [
            (c.interaction_sid, c.fingerprint) for c in self.sim.simulator.change_log(self.mark)
        ]

    def received(self) -> list[Received]:
        return self.receiver.received()

    def missing(self) -> tuple[list[str], list[Any]]:
        return missing(made(self.changes(), self.before), self.received())

    def catch_up(self, timeout: float = 60) -> None:
        """Wait until every interaction made since the baseline arrived in its latest state."""
        wait_for(lambda: self.missing() == ([], []), timeout, "every expected event")

    def report(self) -> SoakReport:
        report = SoakReport(seed=0)
        judge(report, self.changes(), self.before, self.received())
        return report

    def problems(self, *, polled_at_once: bool = True) -> list[str]:
        """Lost events, one change under two ids, other bodies, order broken, two pollers
        (``polled_at_once``: checked)."""
        report = self.report()
        problems = [f"lost {report.lost}"] if report.lost else []
        problems += [f"several ids: {k} {v}" for k, v in report.conflicting_ids.items()]
        problems += report.unexpected
        positions = {(sid, tuple(fp)): n for n, (sid, fp) in enumerate(self.changes())}
        problems += order_problems(self.received(), positions)
        names = [r.name for r in self.replicas]
        for row in unowned_writes(self.url, names):
            problems.append(f"written without the lease: {row}")
        if not polled_at_once:
            return problems
        offset = self.doorways.wall_offset
        for first, second in overlaps(cycle_windows(self.doorways.visits())):
            problems.append(f"polled at once: {first.render(offset)} and {second.render(offset)}")
        return problems

    def duplicate_ids(self) -> dict[str, set[str]]:
        return {k: v for k, v in ids_per_change(self.received()).items() if len(v) > 1}

    def sessions_of(self, service_sid: str) -> set[str]:
        return set(self.sim.simulator.session_sids(service_sid))


@contextlib.contextmanager
def replica_world(
    folder: Path,
    url: str,
    *,
    replicas: int = 2,
    services: int = 2,
    sessions: int = 3,
    history: int = 2,
    seed: int = 13,
    simulator: Simulator | None = None,
    lease_seconds: float = 3,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[World]:
    """Seed ``services`` x ``sessions``, migrate the database, make (not start) the replicas."""
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(SimulatorThread(simulator=simulator or Simulator(seed=seed)))
        for _ in range(services):
            sim.simulator.seed_data(sessions, history)
        doorways = Doorways(sim)
        stack.callback(doorways.close)
        receiver = stack.enter_context(ReceiverThread(ReceiverState(secret=SECRET, seed=seed)))
        migrate(url)
        install_audit(url)
        config = replica_config(folder, sim, url, lease_seconds=lease_seconds, sections=sections)
        group = Replicas(config, folder, doorways, receiver.base_url, replicas)
        stack.callback(group.close)
        yield World(
            sim, doorways, receiver, url, group, sim.simulator.service_sids(), services * sessions
        )


async def _event() -> asyncio.Event:
    return asyncio.Event()


async def _set(event: asyncio.Event) -> None:
    event.set()
