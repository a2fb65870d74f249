"""Shared helpers for integration tests: configs, the CLI as a real process, waiting."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from poller.lab.simulator import SimulatorThread

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ROOT = Path(__file__).resolve().parent.parent


def write_config(
    folder: Path,
    sim: SimulatorThread,
    receiver_url: str,
    *,
    watch: list[dict[str, Any]] | None = None,
    sinks: list[dict[str, Any]] | None = None,
    **sections: Mapping[str, Any],
) -> Path:
    """Write a config pointing at the simulator and the receiver; sections override defaults."""
    s = sim.simulator
    config: dict[str, Any] = {
        "twilio": {
            "account_sid": s.account_sid,
            "auth_token": s.auth_token,
            "base_url": sim.base_url,
            "page_size": 50,
            "max_requests_per_second": 25,
            "retry_deadline_seconds": 5,
        },
        "state": {"path": str(folder / "state.db")},
        "poll": {"interval_seconds": 1, "first_run": "baseline"},
        "watch": watch or [{"service_sid": sid, "all_sessions": True} for sid in s.service_sids()],
        "sinks": sinks
        or [
            {
                "name": "ops",
                "type": "webhook",
                "url": f"{receiver_url}/hooks/ops",
                "secret": SECRET,
                "timeout_seconds": 5,
            }
        ],
        "log": {"format": "json", "level": "info"},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextlib.contextmanager
def seeded_simulator(
    seed: int, sessions: int, per_session: int, body: str = "history"
) -> Iterator[SimulatorThread]:
    """A simulator with one Service whose sessions already hold some interactions."""
    with SimulatorThread(seed=seed) as running:
        service = running.simulator.add_service()["sid"]
        for _ in range(sessions):
            session = running.simulator.add_session(service)["sid"]
            for _ in range(per_session):
                running.simulator.add_interaction(service, session, body=body)
        yield running


def poller_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "poller", *args]


# Runs argv[2:] as a grandchild and writes its rusage to argv[1]. A child spawned straight from
# pytest would report pytest's own peak RSS: Linux carries the high-water mark across exec.
_MEASURE = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"maxrss_kib": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime}, out)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclasses.dataclass(frozen=True)
class Measured:
    """A finished child: its exit status, its own peak RSS and CPU time."""

    returncode: int
    peak_rss_mib: float
    cpu_seconds: float


def run_measured(argv: list[str], folder: Path, **popen: Any) -> Measured:
    """Run ``argv`` to its end (``popen``: stdout, stderr, env, cwd) and measure only it."""
    usage_path = folder / f"usage-{time.monotonic_ns()}.json"
    child = subprocess.Popen([sys.executable, "-c", _MEASURE, str(usage_path), *argv], **popen)
    try:
        returncode = child.wait()
    except BaseException:
        child.kill()
        raise
    usage = json.loads(usage_path.read_text())
    return Measured(returncode, usage["maxrss_kib"] / 1024, usage["cpu"])


def run_poller(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process and return its result."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("POLLER_CONFIG", None)
    return subprocess.run(
        poller_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


def wait_for(condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    """Wait until ``condition()`` is truthy (checked every 20 ms), or fail the test."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaemonProcess:
    """``poller run`` as a real child process; each start logs to its own file in ``folder``."""

    def __init__(self, config: Path, folder: Path, env: Mapping[str, str] | None = None):
        self.config = config
        self.folder = folder
        inherited = {
            k: v for k, v in os.environ.items() if k not in ("POLLER_CONFIG", "POLLER_CRASH_AT")
        }
        self.env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    def start(self) -> DaemonProcess:
        self.starts += 1
        self.log_path = self.folder / f"daemon-{self.starts:02d}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                poller_cmd("run", "-c", str(self.config)),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
            )
        return self

    def _running_proc(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError("the daemon was not started")
        return self.proc

    def log_lines(self) -> list[str]:
        """The lines this start logged so far."""
        if self.log_path is None or not self.log_path.exists():
            return []
        return self.log_path.read_text(errors="replace").splitlines()

    def log_events(self) -> Iterator[dict[str, Any]]:
        """This start's JSON log lines, parsed (other lines skipped)."""
        for line in self.log_lines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                yield item

    def health_port(self) -> int | None:
        """The port of /healthz, /readyz and /metrics, as this start logged it."""
        for item in self.log_events():
            if item.get("event") == "http_listening" and isinstance(item.get("port"), int):
                return int(item["port"])
        return None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_alive(self) -> None:
        code = self._running_proc().poll()
        if code is not None:
            raise AssertionError(f"the daemon exited on its own with {code}; see {self.log_path}")

    def signal(self, sig: int) -> None:
        self._running_proc().send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self._running_proc().wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; return the exit status."""
        if not self.running():
            return int(self._running_proc().returncode)
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL it if it runs, and reap it (never leave a process behind)."""
        if self.running():
            self.signal(signal.SIGKILL)
            self.wait(10)
