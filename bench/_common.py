"""Shared helpers of the benchmarks: the "lab" process, child processes, CPU and RSS, output.

The lab is a separate process holding the Twilio Proxy simulator (with a live traffic generator
that records the wall time of every change it makes) and/or a webhook receiver (that records
the wall time of every event it accepts), so the CPU of the process being measured is never
mixed with the CPU of what it talks to. The parent drives it over a ``multiprocessing`` pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
WEBHOOK_SECRET = "whsec_" + "YmVuY2htYXJrLXNlY3JldC1ub3QtYS1yZWFsLW9uZQ=="


# -- output -------------------------------------------------------------------------------------


def ratio_line(name: str, value: float, goal: str | None = None) -> str:
    """One ``ratio`` line: what the smoke test and the docs look for."""
    text = f"ratio {name}: {value:.3f}x"
    if goal is not None:
        text += f"  (goal {goal})"
    return text


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def machine() -> str:
    """nproc, CPU model, RAM and Python version, one line."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return (
        f"{os.cpu_count()} cpus, {model}, {ram} RAM, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


# -- processes ----------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu_seconds_precise(pid: int) -> float:
    """User + system CPU seconds of a live process to the nanosecond: for short runs.

    /proc/PID/stat counts in clock ticks (10 ms), each of user and system time truncated, so
    a process of 0.15 s reads about 10 ms low. Each live thread's schedstat counts its time on
    the CPU in nanoseconds; a thread that already ended is only in the ticks, so the larger
    of the two is the process's.
    """
    threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            threads += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return max(threads / 1e9, proc_cpu_seconds(pid))


def proc_rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of a live process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Finished:
    """A child process that ended: exit code, wall seconds, CPU seconds, peak RSS (MiB)."""

    code: int
    wall: float
    cpu: float
    max_rss_mb: float
    stdout: str = ""
    stderr: str = ""


def wait_child(proc: subprocess.Popen[str], started: float, timeout: float) -> Finished:
    """Wait for ``proc`` (kill it past ``timeout``) and take its own rusage (``wait4``)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    return Finished(
        code=proc.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mb=usage.ru_maxrss / 1024,
        stdout=out,
        stderr=err,
    )


def run_child(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float
) -> Finished:
    """Run a child to its end, capturing its output; measure it alone."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    # The pipes are read after wait4: keep children quiet (warning-level logs, short output).
    return wait_child(proc, started, timeout)


def stop_child(proc: subprocess.Popen[str], started: float, timeout: float = 30.0) -> Finished:
    """SIGTERM a long-running child and collect it."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    return wait_child(proc, started, timeout)


def instructions(argv: Sequence[str], env: dict[str, str], timeout: float) -> int:
    """Instructions of one run of ``argv`` under ``valgrind --tool=callgrind``.

    The same count however loaded the machine is, where CPU seconds vary by 10 to 20% from run
    to run; valgrind runs the child 20 to 50 times slower.
    """
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=timeout,
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or found is None:
        sys.exit(f"{' '.join(argv)} under valgrind exited {run.returncode}:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_json_child(result: Finished, what: str) -> dict[str, Any]:
    """The last stdout line of a role child, as JSON (exits on failure, showing stderr)."""
    if result.code != 0:
        sys.exit(f"{what} failed with exit code {result.code}:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


# -- the lab process -----------------------------------------------------------------------------


@dataclass
class LabOptions:
    simulator: bool = True
    receiver: bool = False
    rate_limit: float | None = 30.0
    burst: float = 150.0
    sessions: int = 0  # per Service
    interactions_per_session: int = 0
    history_seconds: int = 86400
    services: int = 1
    seed: int = 7
    receiver_secret: str | None = WEBHOOK_SECRET


@dataclass
class LabInfo:
    base_url: str = ""
    account_sid: str = ""
    auth_token: str = ""
    service_sid: str = ""  # the first Service
    sessions: list[str] = field(default_factory=list)  # of every Service
    receiver_url: str = ""
    service_sids: list[str] = field(default_factory=list)


class Lab:
    """The parent's handle on the lab process."""

    def __init__(self, options: LabOptions) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_lab_main, args=(child, options), daemon=True)
        self.process.start()
        child.close()
        reply = self._conn.recv()
        if "error" in reply:
            raise RuntimeError(f"the lab did not start: {reply['error']}")
        self.info = LabInfo(**reply)

    def call(self, command: str, **args: Any) -> Any:
        self._conn.send((command, args))
        reply = self._conn.recv()
        if isinstance(reply, dict) and "error" in reply:
            raise RuntimeError(f"lab {command}: {reply['error']}")
        return reply

    def close(self) -> dict[str, Any]:
        """Stop the lab; return its own CPU seconds."""
        result: dict[str, Any] = self.call("stop")
        self.process.join(10)
        return result

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self.close()
            self.process.kill()


def _lab_main(conn: Connection, options: LabOptions) -> None:
    try:
        asyncio.run(_Lab(conn, options).main())
    except BaseException as exc:  # reported to the parent, which exits
        with contextlib.suppress(Exception):
            conn.send({"error": repr(exc)})
        raise


class _Lab:
    def __init__(self, conn: Connection, options: LabOptions) -> None:
        self.conn = conn
        self.options = options
        self.created_at: dict[str, float] = {}
        self.changed_at: dict[tuple[str, str], float] = {}
        self.delivered: dict[str, tuple[str, str, str, float]] = {}  # webhook id -> ...
        self.traffic: asyncio.Task[int] | None = None
        self.stop_traffic = asyncio.Event()
        self.progress = asyncio.Event()  # set on every event the receiver accepts

    async def main(self) -> None:
        from poller.lab.receiver import ReceiverState, start_receiver
        from poller.lab.simulator import start_simulator

        info = LabInfo()
        sim = receiver = None
        if self.options.simulator:
            simulator = _timed_simulator(self, self.options)
            sim = await start_simulator(simulator=simulator)
            self.sim = sim
            info.base_url = sim.base_url
            info.account_sid, info.auth_token = sim.credentials
            for _ in range(self.options.services if self.options.sessions else 0):
                service_sid, sessions = simulator.seed_data(
                    self.options.sessions,
                    self.options.interactions_per_session,
                    history_seconds=self.options.history_seconds,
                )
                info.service_sids.append(service_sid)
                info.sessions += sessions
            info.service_sid = info.service_sids[0] if info.service_sids else ""
        if self.options.receiver:
            state = ReceiverState(secret=self.options.receiver_secret, on_event=self._received)
            receiver = await start_receiver(state=state)
            self.receiver_state = state
            info.receiver_url = receiver.base_url
        self.conn.send(info.__dict__)
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        loop.add_reader(self.conn.fileno(), lambda: commands.put_nowait(self.conn.recv()))
        try:
            while True:
                command, args = await commands.get()
                if command == "stop":
                    break
                try:
                    reply = await getattr(self, f"cmd_{command}")(**args)
                except Exception as exc:  # one command's boundary: tell the parent
                    reply = {"error": repr(exc)}
                self.conn.send(reply)
        finally:
            loop.remove_reader(self.conn.fileno())
            self.stop_traffic.set()
            if self.traffic is not None:
                with contextlib.suppress(Exception):
                    await self.traffic
            if receiver is not None:
                await receiver.stop()
            if sim is not None:
                await sim.stop()
        self.conn.send({"cpu_seconds": time.process_time()})

    def _received(self, item: Any) -> None:
        if item.webhook_id in self.delivered:
            return
        record = item.body.get("data", {}).get("interaction", {})
        self.delivered[item.webhook_id] = (
            item.event_type,
            str(record.get("sid")),
            str(record.get("date_updated")),
            time.time(),
        )
        self.progress.set()

    async def cmd_stats(self) -> dict[str, Any]:
        return dict(self.sim.simulator.stats())

    async def cmd_rate_limit(self, rate: float | None, burst: float = 150.0) -> dict[str, Any]:
        self.sim.simulator.set_rate_limit(rate, burst)
        return {"rate_limit": rate}

    async def cmd_start_traffic(
        self, rate: float, sessions: list[str], seed: int = 1
    ) -> dict[str, Any]:
        self.stop_traffic.clear()
        self.traffic = asyncio.create_task(
            self.sim.run_traffic(rate, sessions, True, self.stop_traffic, seed=seed)
        )
        return {"started": True}

    async def cmd_stop_traffic(self) -> dict[str, Any]:
        self.stop_traffic.set()
        done = await self.traffic if self.traffic is not None else 0
        self.traffic = None
        return {"changes": done, "created": len(self.created_at)}

    async def cmd_wait_delivered(self, seconds: float) -> dict[str, Any]:
        """Wait until every interaction created by traffic was delivered (or ``seconds``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._created_missing():
                    self.progress.clear()
                    await self.progress.wait()
        return {"missing": self._created_missing()}

    async def cmd_add_interactions(self, service_sid: str, sessions: list[str]) -> dict[str, Any]:
        """Add one message interaction to each of ``sessions`` (new events for a poll)."""
        for session_sid in sessions:
            self.sim.simulator.add_interaction(service_sid, session_sid, body="bench message")
        return {"added": len(sessions)}

    async def cmd_count_received(self) -> dict[str, Any]:
        return {"received": len(self.delivered), "attempts": self.receiver_state.attempts}

    async def cmd_cpu(self) -> dict[str, Any]:
        return {"cpu_seconds": time.process_time()}

    def _created_missing(self) -> int:
        seen = {sid for kind, sid, _, _ in self.delivered.values() if kind.endswith("created")}
        return sum(1 for sid in self.created_at if sid not in seen)

    async def cmd_latencies(self, since: float = 0.0) -> dict[str, Any]:
        """Creation -> delivery seconds of each created interaction; same for updates.

        ``since``: only what was created or changed at or after that wall time.
        """
        created: list[float] = []
        updated: list[float] = []
        for kind, sid, date_updated, at in self.delivered.values():
            if kind.endswith("created") and self.created_at.get(sid, -1.0) >= since:
                created.append(at - self.created_at[sid])
            elif (
                kind.endswith("updated") and self.changed_at.get((sid, date_updated), -1.0) >= since
            ):
                updated.append(at - self.changed_at[(sid, date_updated)])
        return {
            "created": created,
            "updated": updated,
            "created_total": sum(at >= since for at in self.created_at.values()),
            "updates_total": sum(at >= since for at in self.changed_at.values()),
            "missing_created": self._created_missing(),
        }


def _timed_simulator(lab: _Lab, options: LabOptions) -> Any:
    """A Simulator that notes the wall time of each interaction it creates or changes."""
    from poller.lab.simulator import Simulator

    class TimedSimulator(Simulator):
        def add_interaction(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            record = super().add_interaction(*args, **kwargs)
            lab.created_at[record["sid"]] = time.time()
            return record

        def set_status(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            record = super().set_status(*args, **kwargs)
            lab.changed_at[(record["sid"], record["date_updated"])] = time.time()
            return record

    return TimedSimulator(seed=options.seed, rate_limit=options.rate_limit, burst=options.burst)


# -- poller configs ------------------------------------------------------------------------------


def write_config(
    folder: Path,
    info: LabInfo,
    *,
    interval: float = 10.0,
    rate: float = 25.0,
    concurrency: int = 8,
    page_size: int = 1000,
    receiver_url: str | None = None,
    http_port: int | None = None,
    delivery_concurrency: int = 4,
) -> tuple[Path, dict[str, str]]:
    """A config watching every session of the lab's Service; returns (path, environment)."""
    import yaml

    config: dict[str, Any] = {
        "twilio": {
            "account_sid": info.account_sid,
            "auth_token": "${BENCH_TWILIO_AUTH_TOKEN}",
            "base_url": info.base_url,
            "page_size": page_size,
            "max_requests_per_second": rate,
            "max_concurrency": concurrency,
        },
        "state": {"path": str(folder / "state.db")},
        "poll": {"interval_seconds": interval, "first_run": "baseline"},
        "watch": [{"service_sid": info.service_sid, "all_sessions": True}],
        "delivery": {"concurrency": delivery_concurrency},
        "log": {"format": "json", "level": "warning"},
    }
    # A sink is required; where nothing is delivered (a full scan) it is never called.
    receiver_url = receiver_url or "http://127.0.0.1:9"
    if receiver_url:
        config["sinks"] = [
            {
                "name": "bench",
                "type": "webhook",
                "url": f"{receiver_url}/hooks/bench",
                "secret": "${BENCH_WEBHOOK_SECRET}",
            }
        ]
    if http_port is not None:
        config["http"] = {"listen": f"127.0.0.1:{http_port}"}
    path = folder / f"config-{len(list(folder.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {"BENCH_TWILIO_AUTH_TOKEN": info.auth_token, "BENCH_WEBHOOK_SECRET": WEBHOOK_SECRET}
    return path, env
