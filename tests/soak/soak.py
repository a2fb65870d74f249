"""The fault-injection soak: the real daemon, killed and restarted, against a faulty world.

The daemon runs as a child process (``python -m poller run``) against the in-process Twilio
Proxy simulator with live traffic and injected faults (5xx, 429, malformed bodies, slow
answers) and delivers to a receiver that fails a share of deliveries and goes down for a
while; the daemon is SIGKILLed and restarted at random (seeded) moments. At the end traffic
stops, the daemon catches up and is stopped with SIGTERM, and what the simulator made is
compared with what the receiver got: nothing may be lost, and a redelivered event must carry
the id it had the first time.

    python -m tests.soak.soak --minutes 10 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from poller.lab.receiver import Received, ReceiverState, ReceiverThread
from poller.lab.simulator import Fault, Simulator, SimulatorThread, run_traffic
from poller.twilio.records import Fingerprint
from tests.support import DaemonProcess, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SINK = "soak"
TRAFFIC_BODY = "Simulated message"  # how every body run_traffic writes begins
CREATED = "interaction.created"
UPDATED = "interaction.updated"

State = tuple[str, Fingerprint]  # (interaction sid, fingerprint)


@dataclass(frozen=True)
class SoakSettings:
    """Everything that shapes one soak run; the seed makes the schedule repeatable."""

    traffic_seconds: float = 30.0
    seed: int = 1
    sessions: int = 4
    history_per_session: int = 3
    new_sessions: int = 1  # sessions opened while traffic runs (new traffic: all notified)
    # Sessions closed while traffic runs; their interactions still queued or sending go on to
    # be delivered after the close, and those status changes must arrive too.
    closed_sessions: int = 1
    traffic_per_second: float = 4.0
    kill_gap_seconds: tuple[float, float] = (3.0, 7.0)
    # Where kills land: anywhere (a random moment), mid_poll (a Twilio request in flight),
    # mid_delivery (the receiver accepted an event the daemon has not acknowledged yet).
    kill_kinds: tuple[str, ...] = ("anywhere", "mid_poll", "mid_delivery")
    armed_kill_timeout_seconds: float = 5.0
    restart_pause_seconds: tuple[float, float] = (0.0, 1.0)
    outage_seconds: tuple[float, float] = (4.0, 6.0)
    outage_every_seconds: float = 120.0
    error_5xx: float = 0.10
    rate_429: float = 0.10
    malformed: float = 0.05
    slow: float = 0.05
    slow_seconds: float = 1.0
    receiver_fail_rate: float = 0.20
    poll_interval_seconds: float = 1.0
    page_size: int = 10
    catch_up_timeout_seconds: float = 60.0
    start_timeout_seconds: float = 30.0
    stop_timeout_seconds: float = 20.0


@dataclass
class SoakReport:
    """What one run made, delivered and survived; ``lost`` must be 0."""

    seed: int
    seconds: float = 0.0
    changes_made: int = 0
    interactions_created: int = 0
    states_made: int = 0
    states_observed: int = 0
    deliveries: int = 0
    delivered_unique: int = 0
    delivered_by_type: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    kills: int = 0
    kills_by_kind: dict[str, int] = field(default_factory=dict)
    outages: int = 0
    sessions_closed: int = 0
    finished_after_close: int = 0  # interactions still changing when their session closed
    caught_up: bool = False
    exit_code: int | None = None
    missing_created: list[str] = field(default_factory=list)
    missing_latest: list[State] = field(default_factory=list)
    conflicting_ids: dict[str, list[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    unsigned: int = 0
    bad_signatures: int = 0
    twilio_requests: dict[str, dict[str, int]] = field(default_factory=dict)
    faults_injected: dict[str, int] = field(default_factory=dict)
    receiver_attempts: int = 0
    receiver_failures: int = 0
    outbox: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""
    timeline: list[str] = field(default_factory=list)  # what the schedule did, and when
    leaks: dict[str, int] = field(default_factory=dict)  # secret or body -> log lines with it

    @property
    def lost(self) -> int:
        return len(self.missing_created) + len(self.missing_latest)

    def problems(self) -> list[str]:
        """Why this run failed; empty when nothing was lost, mislabelled or left behind."""
        checks = {
            "events were lost": self.lost == 0,
            "the daemon did not catch up in time": self.caught_up,
            "one change was delivered under several ids": not self.conflicting_ids,
            "events nobody made were delivered": not self.unexpected,
            "the daemon did not exit 0 on SIGTERM": self.exit_code == 0,
            "the outbox was not empty at the end": self.outbox == {"pending": {}, "dead": {}},
            "a delivery was unsigned or badly signed": self.unsigned + self.bad_signatures == 0,
            "a secret or a message body was logged": not any(self.leaks.values()),
        }
        return [problem for problem, ok in checks.items() if not ok]

    def render(self) -> str:
        types = self.delivered_by_type
        lines = [
            f"soak report (seed {self.seed}, {self.seconds:.1f}s, state in {self.workdir})",
            f"  simulator changes made        {self.changes_made}"
            f"  ({self.interactions_created} interactions created)",
            f"  states made / observed        {self.states_made} / {self.states_observed}"
            "  (intermediate states shorter than a poll cannot be observed)",
            f"  events delivered (unique ids) {self.delivered_unique}"
            f"  ({types.get(CREATED, 0)} created, {types.get(UPDATED, 0)} updated)",
            f"  deliveries accepted           {self.deliveries}",
            f"  duplicates (same id again)    {self.duplicates}",
            f"  conflicting ids               {len(self.conflicting_ids)}",
            f"  unexpected events             {len(self.unexpected)}",
            f"  kills survived                {self.kills}  ({_counts(self.kills_by_kind)})",
            f"  receiver outages              {self.outages}",
            f"  sessions closed mid-traffic   {self.sessions_closed}"
            f"  ({self.finished_after_close} interactions delivered after the close)",
            f"  twilio faults injected        {_counts(self.faults_injected)}",
            f"  twilio answers                {_counts(_flatten(self.twilio_requests))}",
            f"  receiver failures             {self.receiver_failures}"
            f" of {self.receiver_attempts} attempts",
            f"  unsigned / bad signatures     {self.unsigned} / {self.bad_signatures}",
            f"  outbox at the end             {json.dumps(self.outbox, sort_keys=True)}",
            f"  secrets/bodies in daemon logs {_counts(self.leaks)}",
            f"  caught up / exit code         {self.caught_up} / {self.exit_code}",
            f"  lost                          {self.lost}",
        ]
        for sid in self.missing_created[:10]:
            lines.append(f"    never created: {sid}")
        for sid, fp in self.missing_latest[:10]:
            lines.append(f"    latest state never delivered: {sid} {tuple(fp)}")
        for key, ids in list(self.conflicting_ids.items())[:10]:
            lines.append(f"    several ids for {key}: {ids}")
        for text in self.unexpected[:10]:
            lines.append(f"    unexpected: {text}")
        if self.problems():
            lines.append(f"  problems: {'; '.join(self.problems())}")
            lines.append("  timeline (seconds after traffic started):")
            lines += [f"    {entry}" for entry in self.timeline]
        return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


def _flatten(by_kind: dict[str, dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for statuses in by_kind.values():
        total.update(statuses)
    return dict(total)


class KillSwitch:
    """SIGKILL an armed process the moment a hook fires (a request or a delivery arrives).

    Armed by the soak's main thread, fired from the simulator's or the receiver's thread, so
    the daemon dies while its request is in flight: before it reads Twilio's answer, or after
    the receiver accepted an event but before the daemon could acknowledge it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._where = ""
        self.fired = threading.Event()

    def arm(self, pid: int, where: str) -> None:
        with self._lock:
            self._pid, self._where = pid, where
            self.fired.clear()

    def disarm(self) -> None:
        with self._lock:
            self._pid = None

    def hook(self, where: str) -> None:
        with self._lock:
            if self._pid is None or self._where != where:
                return
            # The child is not reaped before the main thread sees ``fired``: the pid is ours.
            os.kill(self._pid, signal.SIGKILL)
            self._pid = None
            self.fired.set()


class CountingSimulator(Simulator):
    """A simulator that counts the faults it injects and calls a hook on every API request."""

    def __init__(self, *, on_request: Callable[[], None] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.injected: Counter[str] = Counter()
        self._on_request = on_request

    def draw_fault(self) -> Fault:
        if self._on_request is not None:
            self._on_request()
        fault = super().draw_fault()
        with self._lock:
            if fault.status is not None:
                self.injected[str(fault.status)] += 1
            if fault.malformed is not None:
                self.injected[f"malformed:{fault.malformed}"] += 1
            if fault.delay:
                self.injected["slow"] += 1
        return fault


def _config(folder: Path, sim: SimulatorThread, receiver_url: str, s: SoakSettings) -> Path:
    simulator = sim.simulator
    backoff = max(0.1, s.poll_interval_seconds / 5)
    config: dict[str, Any] = {
        "twilio": {
            "account_sid": simulator.account_sid,
            "auth_token": simulator.auth_token,
            "base_url": sim.base_url,
            "page_size": s.page_size,
            "max_requests_per_second": 25,
            "timeout_seconds": max(2.0, s.slow_seconds * 3),
            "retry_deadline_seconds": 5,
        },
        "state": {"path": str(folder / "state.db")},
        "poll": {"interval_seconds": s.poll_interval_seconds, "first_run": "baseline"},
        "delivery": {
            "max_attempts": 10_000,
            "initial_backoff_seconds": backoff,
            "max_backoff_seconds": max(backoff, 2.0),
            "shutdown_timeout_seconds": 5,
        },
        "watch": [{"service_sid": sid, "all_sessions": True} for sid in simulator.service_sids()],
        "sinks": [
            {
                "name": SINK,
                "type": "webhook",
                "url": f"{receiver_url}/hooks/soak",
                "secret": SECRET,
                "timeout_seconds": 5,
            }
        ],
        "http": {"listen": "127.0.0.1:0"},
        "log": {"format": "json", "level": "info"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _ready(daemon: DaemonProcess) -> bool:
    daemon.ensure_alive()
    port = daemon.health_port()
    if port is None:
        return False
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.json().get("status") == "ok"


@dataclass(order=True)
class _Action:
    at: float
    name: str = field(compare=False)
    run: Callable[[], None] = field(compare=False)


class Soak:
    """One soak run: build the world, run the schedule, catch up, stop, compare."""

    def __init__(self, settings: SoakSettings, folder: Path) -> None:
        self.s = settings
        self.folder = folder
        self.rng = random.Random(f"{settings.seed}:schedule")
        self.report = SoakReport(seed=settings.seed, workdir=str(folder))
        self.switch = KillSwitch()
        simulator = CountingSimulator(
            seed=settings.seed, on_request=lambda: self.switch.hook("mid_poll")
        )
        self.sim = SimulatorThread(simulator=simulator)
        self.receiver = ReceiverThread(
            ReceiverState(
                secret=SECRET,
                seed=settings.seed,
                on_event=lambda _item: self.switch.hook("mid_delivery"),
            )
        )
        self.kinds: Counter[str] = Counter()
        self.last_kill = ""
        self.daemon: DaemonProcess | None = None
        self.service = ""
        self.mark = 0
        self.closing: list[str] = []
        self.before: set[str] = set()

    def run(self) -> SoakReport:
        started = time.monotonic()
        with self.sim, self.receiver:
            self._seed()
            config = _config(self.folder, self.sim, self.receiver.base_url, self.s)
            self.daemon = DaemonProcess(config, self.folder)
            try:
                self._baseline()
                self._live()
                self._catch_up()
                self.report.exit_code = self.daemon.stop(self.s.stop_timeout_seconds)
            finally:
                self.daemon.kill()
                self.sim.simulator.clear_faults()
            self._outbox(config)
            self._compare()
            self._scan_logs()
        self.report.seconds = time.monotonic() - started
        return self.report

    # -- phases ------------------------------------------------------------------------------

    def _seed(self) -> None:
        simulator = self.sim.simulator
        self.service, _ = simulator.seed_data(self.s.sessions, self.s.history_per_session)

    def _baseline(self) -> None:
        """Start the daemon and wait until its first full cycle baselined every session."""
        daemon = self.daemon
        assert daemon is not None
        daemon.start()
        wait_for(lambda: _ready(daemon), self.s.start_timeout_seconds, "the first poll")
        simulator = self.sim.simulator
        self.mark = len(simulator.change_log())
        self.before = set(simulator.interaction_sids())

    def _live(self) -> None:
        """Traffic, faults, receiver failures and outages, and kills, on a seeded schedule."""
        s = self.s
        self.sim.simulator.fault_rates(
            error_5xx=s.error_5xx,
            rate_429=s.rate_429,
            malformed=s.malformed,
            slow=s.slow,
            slow_seconds=s.slow_seconds,
        )
        self.receiver.call(lambda: setattr(self.receiver.state, "fail_rate", s.receiver_fail_rate))
        stop = self.sim.submit(_new_event()).result(timeout=10)
        traffic = self.sim.submit(
            run_traffic(self.sim.simulator, s.traffic_per_second, stop=stop, seed=s.seed)
        )
        begin = time.monotonic()
        try:
            for action in sorted(self._schedule()):
                self._wait_for(begin + action.at)
                action.run()
                self.report.timeline.append(
                    f"{time.monotonic() - begin:7.2f}  {action.name}  {self._last_kind(action)}"
                )
            self._wait_for(begin + s.traffic_seconds)
        finally:
            self.sim.submit(_set(stop)).result(timeout=10)
            traffic.result(timeout=10)
            self._receiver_status(204)

    def _schedule(self) -> list[_Action]:
        s, rng = self.s, self.rng
        span = s.traffic_seconds
        actions: list[_Action] = []
        at = rng.uniform(*s.kill_gap_seconds)
        # Kinds take turns (from a random one), so that even a short soak has each of them.
        turn = rng.randrange(len(s.kill_kinds))
        while at < span - 1.0:
            kind = s.kill_kinds[turn % len(s.kill_kinds)]
            turn += 1
            actions.append(_Action(at, "kill", functools.partial(self._kill_and_restart, kind)))
            at += rng.uniform(*s.kill_gap_seconds)
        outages = max(1, int(span // s.outage_every_seconds))
        for n in range(outages):
            window = span / outages
            length = rng.uniform(*s.outage_seconds)
            start = n * window + rng.uniform(0.2, 0.6) * max(0.0, window - length)
            actions.append(_Action(start, "receiver down", self._receiver_down))
            actions.append(_Action(start + length, "receiver up", self._receiver_up))
        for _ in range(s.new_sessions):
            actions.append(_Action(rng.uniform(0.1, 0.7) * span, "new session", self._new_session))
        for _ in range(s.closed_sessions):
            at = rng.uniform(0.3, 0.7) * span
            actions.append(_Action(at, "close session", self._close_session))
            # A few polls later, what was still queued in it is delivered: after the close.
            finish = at + rng.uniform(1.5, 3.0)
            actions.append(_Action(finish, "closed session's messages delivered", self._finish))
        return actions

    def _wait_for(self, deadline: float) -> None:
        """Pass the time until ``deadline``, failing at once if the daemon dies by itself."""
        assert self.daemon is not None
        proc = self.daemon.proc
        assert proc is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.daemon.ensure_alive()
            return
        try:
            code = proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            return
        raise AssertionError(
            f"the daemon exited on its own with {code}; see {self.daemon.log_path}"
        )

    def _last_kind(self, action: _Action) -> str:
        if action.name != "kill" or self.daemon is None:
            return ""
        return f"{self.last_kill} (then {self.daemon.log_path})"

    def _kill_and_restart(self, kind: str) -> None:
        assert self.daemon is not None
        self.daemon.ensure_alive()
        if kind == "anywhere":
            self.daemon.kill()
        else:
            assert self.daemon.proc is not None
            self.switch.arm(self.daemon.proc.pid, kind)
            if not self.switch.fired.wait(self.s.armed_kill_timeout_seconds):
                self.switch.disarm()
                if not self.switch.fired.is_set():  # nothing was in flight: kill it here
                    kind = "anywhere"
                    self.daemon.kill()
            if kind != "anywhere":
                self.daemon.wait(10)  # killed by the switch: reap it
        self.kinds[kind] += 1
        self.last_kill = kind
        self.report.kills += 1
        time.sleep(self.rng.uniform(*self.s.restart_pause_seconds))  # the daemon is down
        self.daemon.start()

    def _receiver_status(self, status: int) -> None:
        self.receiver.call(lambda: setattr(self.receiver.state, "status", status))

    def _receiver_down(self) -> None:
        self.report.outages += 1
        self._receiver_status(503)

    def _receiver_up(self) -> None:
        self._receiver_status(204)

    def _new_session(self) -> None:
        self.sim.simulator.add_session(self.service)

    def _close_session(self) -> None:
        """Close the open session with the most interactions still changing.

        What was queued in it goes on to be delivered after the close (``_finish``): the
        poller must keep polling the closed session until those status changes are seen.
        """
        sim = self.sim.simulator
        opened = [
            sid
            for sid in sim.session_sids(self.service)
            if sim.fetch_session(self.service, sid)["status"] in ("open", "in-progress")
        ]
        if len(opened) < 2:
            return
        target = max(opened, key=lambda sid: len(sim.unsettled(sim.interaction_sids(sid))))
        self.closing += sim.unsettled(sim.interaction_sids(target))
        sim.close_session(target)
        self.report.sessions_closed += 1
        self.report.finished_after_close += len(self.closing)

    def _finish(self) -> None:
        sim = self.sim.simulator
        for interaction in self.closing:
            while sim.advance(interaction) is not None:
                pass
        self.closing = []

    def _catch_up(self) -> None:
        """Wait until every expected state arrived (the daemon keeps facing Twilio faults)."""
        daemon = self.daemon
        assert daemon is not None

        def done() -> bool:
            daemon.ensure_alive()
            created, latest = self._missing(self.receiver.received())
            return not created and not latest

        try:
            wait_for(done, self.s.catch_up_timeout_seconds, "every expected event")
            self.report.caught_up = True
        except AssertionError:  # timed out, or the daemon died (its log says why)
            self.report.caught_up = False

    def _outbox(self, config: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "poller", "state", "show", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
        if result.returncode != 0:
            self.report.outbox = {"error": result.stderr.strip()}
            return
        outbox = json.loads(result.stdout)["outbox"]
        self.report.outbox = {"pending": outbox["pending"], "dead": outbox["dead"]}

    def _scan_logs(self) -> None:
        """Count daemon log lines holding the auth token, the webhook secret or a body."""
        needles = {
            "auth_token": self.sim.simulator.auth_token,
            "webhook_secret": SECRET.removeprefix("whsec_"),
            "message_body": TRAFFIC_BODY,
        }
        leaks = dict.fromkeys(needles, 0)
        for path in sorted(self.folder.glob("daemon-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                for name, needle in needles.items():
                    leaks[name] += needle in line
        self.report.leaks = leaks

    def _changes(self) -> list[tuple[str, Fingerprint]]:
        return [
            (c.interaction_sid, c.fingerprint) for c in self.sim.simulator.change_log(self.mark)
        ]

    def _missing(self, received: list[Received]) -> tuple[list[str], list[State]]:
        return missing(made(self._changes(), self.before), received)

    def _compare(self) -> None:
        report = self.report
        judge(report, self._changes(), self.before, self.receiver.received())
        report.kills_by_kind = dict(self.kinds)
        state = self.receiver.state
        attempts, rejected = self.receiver.call(lambda: (state.attempts, state.rejected_signatures))
        report.receiver_attempts = int(attempts)
        report.bad_signatures = int(rejected)
        report.receiver_failures = (
            report.receiver_attempts - report.deliveries - report.bad_signatures
        )
        simulator = self.sim.simulator
        report.twilio_requests = simulator.stats()["requests"]
        assert isinstance(simulator, CountingSimulator)
        report.faults_injected = dict(simulator.injected)


# -- the comparison (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Made:
    """What the simulator made after the baseline."""

    created: list[str]  # interactions, in creation order
    latest: dict[str, Fingerprint]  # each interaction's last state
    states: set[State]  # every state any interaction held


def made(changes: Sequence[tuple[str, Fingerprint]], before: Collection[str]) -> Made:
    """Read the simulator's change log (from the baseline on); ``before``: baselined sids."""
    created: list[str] = []
    latest: dict[str, Fingerprint] = {}
    states: set[State] = set()
    for sid, fp in changes:
        if sid in before:
            continue  # the traffic never touches history; a change to it is no event to expect
        if sid not in latest:
            created.append(sid)
        latest[sid] = fp
        states.add((sid, fp))
    return Made(created, latest, states)


def missing(expected: Made, received: Sequence[Received]) -> tuple[list[str], list[State]]:
    """Interactions never delivered as created, and latest states no event carried."""
    got_created = {_sid(r) for r in received if r.event_type == CREATED}
    got_states = {_state(r) for r in received}
    return (
        [sid for sid in expected.created if sid not in got_created],
        [(sid, fp) for sid, fp in expected.latest.items() if (sid, fp) not in got_states],
    )


def judge(
    report: SoakReport,
    changes: Sequence[tuple[str, Fingerprint]],
    before: Collection[str],
    received: Sequence[Received],
) -> None:
    """Fill the report's comparison of what was made with what was delivered."""
    expected = made(changes, before)
    report.changes_made = len(changes)
    report.interactions_created = len(expected.created)
    report.states_made = len(expected.states)
    report.missing_created, report.missing_latest = missing(expected, received)
    report.deliveries = len(received)
    by_id: dict[str, Received] = {}
    ids: defaultdict[str, set[str]] = defaultdict(set)
    for item in received:
        first = by_id.setdefault(item.webhook_id, item)
        if first.body != item.body:
            report.unexpected.append(f"{item.webhook_id} redelivered with another body")
        sid, fp = _state(item)
        ids[f"{sid} {item.event_type} {tuple(fp)}"].add(item.webhook_id)
        report.unsigned += not item.signed
    report.delivered_unique = len(by_id)
    report.duplicates = len(received) - len(by_id)
    report.delivered_by_type = dict(Counter(r.event_type for r in by_id.values()))
    report.conflicting_ids = {k: sorted(v) for k, v in ids.items() if len(v) > 1}
    observed = {_state(r) for r in by_id.values()}
    report.states_observed = len(observed & expected.states)
    for sid, fp in sorted(observed - expected.states):
        report.unexpected.append(f"{sid} {tuple(fp)} was never made by the simulator")
    created = set(expected.created)
    for item in by_id.values():
        if item.event_type == CREATED and _sid(item) not in created:
            report.unexpected.append(f"{_sid(item)} notified as created, but existed before")


def _sid(item: Received) -> str:
    return str(item.body["data"]["interaction"]["sid"])


def _state(item: Received) -> State:
    record = item.body["data"]["interaction"]
    return _sid(item), Fingerprint(
        record.get("date_updated"),
        record.get("inbound_resource_status"),
        record.get("outbound_resource_status"),
    )


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


async def _set(event: asyncio.Event) -> None:
    event.set()


def run_soak(settings: SoakSettings, folder: Path) -> SoakReport:
    """Run one soak with its files in ``folder``; the caller judges the report."""
    folder.mkdir(parents=True, exist_ok=True)
    return Soak(settings, folder).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long traffic runs")
    parser.add_argument("--seed", type=int, default=1, help="seed of faults and schedule")
    parser.add_argument("--keep", default=None, help="folder for the state and logs (temp dir)")
    parser.add_argument("--rate", type=float, default=4.0, help="traffic changes per second")
    args = parser.parse_args(argv)
    # A daemon killed mid-request leaves the receiver a half-read body; aiohttp logs each one
    # with a traceback, which would bury the report.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    seconds = args.minutes * 60
    settings = SoakSettings(
        traffic_seconds=seconds,
        seed=args.seed,
        sessions=8,
        new_sessions=max(1, int(args.minutes)),
        traffic_per_second=args.rate,
        page_size=50,
        kill_gap_seconds=(3.0, 30.0) if seconds > 120 else (3.0, 7.0),
        catch_up_timeout_seconds=120.0,
    )
    if args.keep is not None:
        report = run_soak(settings, Path(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="poller-soak-") as tmp:
            report = run_soak(settings, Path(tmp))
    print(report.render(), flush=True)
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
