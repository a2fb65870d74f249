"""Start-up CPU: ``poller check-config`` and ``poller once`` up to its first request.

Baseline, in the same invocation: the bare interpreter running
``python -c "import asyncio, json, ssl, logging, argparse"``. Every command runs as a child
process of its own, rounds interleaved (so other work on the machine falls on all of them
alike), and the median of ``--runs`` runs (9) is reported:

- ``check-config``: the whole process (``wait4`` rusage: it exits right after).
- ``once`` to its first request: a local Twilio stand-in (a thread of this process) notes the
  child's CPU (each thread's ``/proc/PID/task/TID/schedstat``, in nanoseconds: the clock ticks
  of ``/proc/PID/stat`` read about 10 ms low) the moment the first request arrives, then
  answers an empty Sessions page; the child is blocked on that answer, so nothing of it runs
  while it is read. The state file was made by an unmeasured run first (the cron case).
- ``once`` whole: the same run's process CPU (``wait4``), for scale.

Bytecode: an installed poller has its ``.pyc`` files (pip compiles them), an editable checkout
under ``PYTHONDONTWRITEBYTECODE=1`` compiles every module at every start. The children run
with bytecode caching on, in a temporary ``PYTHONPYCACHEPREFIX``, after one unmeasured run of
each command, so what is measured is the installed case for the baseline and the poller alike.

    python bench/bench_startup.py [--runs N] [--quick] [--importtime] [--instructions]

``--importtime`` prints the imports that cost most (``python -X importtime``, cumulative
microseconds, one run) for both commands. ``--instructions`` also counts the instructions of
one run of each (``valgrind --tool=callgrind``): the same count however loaded the machine is,
where CPU seconds vary by 10 to 20% from run to run. ``once`` is counted whole (its first
request cannot be marked in the count).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    ROOT,
    LabInfo,
    instructions,
    machine,
    proc_cpu_seconds_precise,
    ratio_line,
    table,
    wait_child,
    write_config,
)

BARE = "import asyncio, json, ssl, logging, argparse"
POLLER = str(Path(PYTHON).parent / "poller")
ACCOUNT = "AC" + "0" * 32
SERVICE = "KS" + "0" * 32
GOAL = "<= 2.5"
TIMEOUT = 60.0


class TwilioStandIn:
    """An HTTP server on 127.0.0.1 that notes the CPU of ``pid`` at its first request."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.cpu_at_first_request: float | None = None
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if stand_in.cpu_at_first_request is None and stand_in.pid is not None:
                    stand_in.cpu_at_first_request = proc_cpu_seconds_precise(stand_in.pid)
                body = json.dumps(
                    {"sessions": [], "meta": {"key": "sessions", "next_page_url": None}}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TwilioStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def expect(self, pid: int) -> None:
        self.pid, self.cpu_at_first_request = pid, None


def _spawn(argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        list(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
    )


def _whole(argv: Sequence[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    finished = wait_child(_spawn(argv, env), started, TIMEOUT)
    if finished.code != 0:
        sys.exit(f"{' '.join(argv)} exited {finished.code}:\n{finished.stderr[-2000:]}")
    return finished.cpu


def _once(stand_in: TwilioStandIn, config: Path, env: dict[str, str]) -> tuple[float, float]:
    """Return (CPU at the first request, CPU of the whole run) of one ``poller once``."""
    started = time.monotonic()
    proc = _spawn([POLLER, "once", "-c", str(config)], env)
    stand_in.expect(proc.pid)
    finished = wait_child(proc, started, TIMEOUT)
    first = stand_in.cpu_at_first_request
    if finished.code != 0 or first is None:
        sys.exit(f"poller once exited {finished.code}:\n{finished.stderr[-2000:]}")
    return first, finished.cpu


def _top_imports(argv: Sequence[str], env: dict[str, str], count: int = 12) -> list[list[object]]:
    run = subprocess.run(
        [PYTHON, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=TIMEOUT,
    )
    rows: list[tuple[int, str]] = []
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit() and name.strip() and not name.startswith("  " * 3):
            rows.append((int(cumulative), name.rstrip()))
    rows.sort(reverse=True)
    return [[name, us] for us, name in rows[:count]]


def _report_instructions(config: Path, env: dict[str, str]) -> None:
    commands = {
        NAMES[0]: [PYTHON, "-c", BARE],
        NAMES[1]: [POLLER, "check-config", "-c", str(config)],
        NAMES[3]: [POLLER, "once", "-c", str(config)],
    }
    counts = {name: instructions(argv, env, TIMEOUT * 20) for name, argv in commands.items()}
    base = counts[NAMES[0]]
    rows = [[name, f"{count / 1e6:,.0f} M", count / base] for name, count in counts.items()]
    print("\ninstructions of one run each (valgrind --tool=callgrind):")
    print(table(rows, ["command", "instructions", "x baseline"]))
    print(ratio_line("check-config/bare interpreter instructions", counts[NAMES[1]] / base, GOAL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each command (median)")
    parser.add_argument("--quick", action="store_true", help="one run each: a smoke run")
    parser.add_argument("--importtime", action="store_true", help="print the costliest imports")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions too (needs valgrind)"
    )
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    if args.quick:
        args.runs = 1
    print(f"bench_startup: {args.runs} runs each, median CPU (user + system) per child")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, TwilioStandIn() as twilio:
        info = LabInfo(base_url=twilio.base_url, account_sid=ACCOUNT, service_sid=SERVICE)
        info.auth_token = "0" * 32
        config, env = write_config(Path(tmp), info)
        env.update(PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"), PYTHONDONTWRITEBYTECODE="")
        # Not measured: makes the state file and every command's bytecode.
        _whole([PYTHON, "-c", BARE], env)
        _whole([POLLER, "check-config", "-c", str(config)], env)
        _once(twilio, config, env)
        samples: dict[str, list[float]] = {name: [] for name in NAMES}
        for _ in range(max(1, args.runs)):
            samples[NAMES[0]].append(_whole([PYTHON, "-c", BARE], env))
            samples[NAMES[1]].append(_whole([POLLER, "check-config", "-c", str(config)], env))
            first, whole = _once(twilio, config, env)
            samples[NAMES[2]].append(first)
            samples[NAMES[3]].append(whole)
        if args.importtime:
            for command in ("check-config", "once"):
                print(f"\ncostliest imports of `poller {command}` (cumulative us, one run):")
                argv = ["-m", "poller", command, "-c", str(config)]
                print(table(_top_imports(argv, env), ["module", "us"]))
        _report(samples)
        if args.instructions:
            _report_instructions(config, env)


NAMES = (
    f'python -c "{BARE}" (baseline)',
    "poller check-config",
    "poller once, to its first request",
    "poller once, whole run (nothing to do)",
)


def _report(samples: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians[NAMES[0]]
    rows = [
        [name, medians[name], min(values), max(values), medians[name] / base]
        for name, values in samples.items()
    ]
    print()
    print(table(rows, ["command", "median cpu s", "min", "max", "x baseline"]))
    print()
    print(ratio_line("check-config/bare interpreter cpu", medians[NAMES[1]] / base, GOAL))
    print(ratio_line("once to first request/bare interpreter cpu", medians[NAMES[2]] / base, GOAL))


if __name__ == "__main__":
    main()
