"""Scale: 5,000 sessions in one Service under Proxy's 30 requests/s, live traffic on 100.

The simulator (30 requests/s per Service, bursts of 150) and a signature-verifying webhook
receiver run in a lab process; ``poller run`` runs as a subprocess of its own with
``all_sessions: true`` and ``poll.interval_seconds: 10``. Its state is baselined first with
``poller once`` (the simulator's limit lifted for that step only, ``--baseline-under-limit``
makes the daemon baseline under the limit itself: 5,000 requests, ~200 s), then live traffic
of ~5 new interactions/s (10 changes/s: half creations, half status steps) runs on 100 active
sessions for ``--minutes`` (default 3). The traffic generator notes the wall time of every
creation; the receiver notes when each event arrives.

``--cold-start``: no baseline beforehand, the limit on from the start: the daemon baselines
the 5,000 sessions in the background within each cycle's request budget while the traffic
runs from second 20; the run goes on until the baseline is done plus one minute (at least
``--minutes``). Printed as well: the warnings and errors the daemon logged, when its baseline
ended, and its CPU over the whole run.

Printed: requests per cycle over the steady phase (simulator counters / cycles), p50/p99 from
an interaction's creation to its delivery, the daemon's CPU over the steady phase (% of one
core, from /proc) and its peak RSS (``ru_maxrss`` from ``wait4``). Baseline: the naive
strategy "poll every session every cycle" (5,000 requests per cycle, ~167 s per cycle at
30 requests/s), computed, and the ratio.

    python bench/bench_scale.py [--quick] [--minutes M] [--sessions N]
                                [--baseline-under-limit | --cold-start]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    ROOT,
    Lab,
    LabOptions,
    free_port,
    machine,
    percentile,
    proc_cpu_seconds,
    proc_rss_mb,
    ratio_line,
    run_child,
    stop_child,
    table,
    write_config,
)

SIM_RATE = 30.0
SIM_BURST = 150.0
ACTIVE_SESSIONS = 100
CHANGES_PER_SECOND = 10.0  # about half are new interactions, half status steps
INTERACTIONS_PER_SESSION = 10
COLD_TRAFFIC_FROM = 20.0  # seconds after the daemon's start
COLD_TAIL = 60.0  # seconds of traffic after the baseline ended
COLD_CAP = 1200.0  # give up on the baseline after this long


def wait_ready(port: int, proc: subprocess.Popen[str], timeout: float) -> float:
    """Wait for the daemon's /readyz (its first cycle succeeded); return the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            sys.exit(f"the daemon exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    sys.exit(f"the daemon was not ready within {timeout:.0f}s")


def requests_by_kind(stats: dict[str, Any]) -> dict[str, int]:
    return {kind: sum(by_status.values()) for kind, by_status in stats["requests"].items()}


def throttled(stats: dict[str, Any]) -> int:
    return sum(by_status.get("429", 0) for by_status in stats["requests"].values())


def run(args: argparse.Namespace) -> None:
    sessions, interval, seconds = args.sessions, args.interval, args.minutes * 60
    print(
        f"bench_scale: {sessions:,} sessions x {INTERACTIONS_PER_SESSION} interactions, "
        f"{ACTIVE_SESSIONS} active, {CHANGES_PER_SECOND:g} changes/s for {seconds:.0f}s, "
        f"interval {interval:g}s, simulator limit {SIM_RATE:g}/s (burst {SIM_BURST:g})"
    )
    print(f"machine: {machine()}")
    options = LabOptions(
        receiver=True,
        rate_limit=SIM_RATE,
        burst=SIM_BURST,
        sessions=sessions,
        interactions_per_session=INTERACTIONS_PER_SESSION,
    )
    with Lab(options) as lab, tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = Path(tmp)
        info = lab.info
        port = free_port()
        config, env = write_config(
            folder, info, interval=interval, receiver_url=info.receiver_url, http_port=port
        )
        if args.cold_start:
            _log_at_info(config)
        baseline_took = None
        if not (args.baseline_under_limit or args.cold_start):
            fast, _ = write_config(folder, info, rate=150.0, receiver_url=info.receiver_url)
            lab.call("rate_limit", rate=None)
            once = run_child(
                [PYTHON, "-m", "poller", "once", "-c", str(fast)], env=env, timeout=600
            )
            if once.code != 0:
                sys.exit(f"poller once (baseline) exited {once.code}:\n{once.stderr[-2000:]}")
            baseline_took = once.wall
            lab.call("rate_limit", rate=SIM_RATE, burst=SIM_BURST)
            print(
                f"baseline: poller once, limit lifted, {once.wall:.1f}s wall, {once.cpu:.1f}s cpu"
            )

        log_path = folder / "daemon.log"
        with open(log_path, "w") as log:
            started = time.monotonic()
            daemon = subprocess.Popen(
                [PYTHON, "-m", "poller", "run", "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **env},
                cwd=ROOT,
            )
            try:
                ready = wait_ready(port, daemon, 600 if args.baseline_under_limit else 120)
                print(f"daemon ready (first cycle done) after {ready:.1f}s")
                if args.baseline_under_limit:
                    baseline_took = ready
                if args.cold_start:
                    steady = measure_cold(lab, daemon.pid, info.sessions, seconds, port, started)
                else:
                    steady = measure_steady(lab, daemon.pid, info.sessions, seconds)
                missing = lab.call("wait_delivered", seconds=3 * interval + 5)["missing"]
                latencies = lab.call("latencies")
                rss_live = proc_rss_mb(daemon.pid)
            finally:
                finished = stop_child(daemon, started)
        lab_cpu = lab.close()["cpu_seconds"]
        lines = log_path.read_text().splitlines()
        errors = [line for line in lines if '"error"' in line]
    report(args, steady, latencies, missing, finished.max_rss_mb, rss_live, baseline_took)
    if args.cold_start:
        report_cold(lines, steady, finished.cpu)
    print(f"lab (simulator + receiver + traffic) cpu: {lab_cpu:.1f}s; daemon exit {finished.code}")
    if errors:
        print(f"daemon logged {len(errors)} error lines, the first: {errors[0][:300]}")


def measure_steady(lab: Lab, pid: int, sessions: list[str], seconds: float) -> dict[str, Any]:
    before = lab.call("stats")
    cpu_before, wall_before = proc_cpu_seconds(pid), time.monotonic()
    lab.call("start_traffic", rate=CHANGES_PER_SECOND, sessions=sessions[:ACTIVE_SESSIONS])
    deadline = wall_before + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 30.0))
        done = time.monotonic() - wall_before
        cpu = proc_cpu_seconds(pid) - cpu_before
        print(f"  {done:5.0f}s  daemon cpu {100 * cpu / done:4.1f}%", flush=True)
    traffic = lab.call("stop_traffic")
    cpu, wall = proc_cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
    after = lab.call("stats")
    return {"before": before, "after": after, "cpu": cpu, "wall": wall, "traffic": traffic}


def measure_cold(
    lab: Lab, pid: int, sessions: list[str], seconds: float, port: int, started: float
) -> dict[str, Any]:
    """Traffic from second 20 of the daemon until its baseline is done plus a minute."""
    time.sleep(max(0.0, started + COLD_TRAFFIC_FROM - time.monotonic()))
    before = lab.call("stats")
    cpu_before, wall_before = proc_cpu_seconds(pid), time.monotonic()
    lab.call("start_traffic", rate=CHANGES_PER_SECOND, sessions=sessions[:ACTIVE_SESSIONS])
    baseline_done: float | None = None
    printed = wall_before
    while True:
        time.sleep(5.0)
        now = time.monotonic()
        pending = _pending_baselines(port)
        if baseline_done is None and pending == 0:
            baseline_done = now - started
        ran = now - wall_before
        if (
            ran >= seconds
            and baseline_done is not None
            and now - started >= baseline_done + COLD_TAIL
        ):
            break
        if now - started > COLD_CAP:
            print(f"  the baseline did not end within {COLD_CAP:.0f}s")
            break
        if now - printed >= 30.0:
            printed = now
            cpu = proc_cpu_seconds(pid) - cpu_before
            print(
                f"  {ran:5.0f}s  daemon cpu {100 * cpu / ran:4.1f}%  baselines pending {pending}",
                flush=True,
            )
    traffic = lab.call("stop_traffic")
    cpu, wall = proc_cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
    after = lab.call("stats")
    return {
        "before": before,
        "after": after,
        "cpu": cpu,
        "wall": wall,
        "traffic": traffic,
        "whole_wall": time.monotonic() - started,
        "whole_cpu": proc_cpu_seconds(pid),
        "baseline_done": baseline_done,
    }


def _pending_baselines(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    for line in text.splitlines():
        if line.startswith("poller_baseline_pending_sessions "):
            return float(line.split()[1])
    return None


def _log_at_info(config: Path) -> None:
    """Log at info, so that every warning and the baseline's progress are in the log."""
    import yaml

    data = yaml.safe_load(config.read_text())
    data["log"]["level"] = "info"
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def report_cold(lines: list[str], steady: dict[str, Any], cpu_total: float) -> None:
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    loud = [e for e in events if isinstance(e, dict) and e.get("level") in ("warning", "error")]
    kinds: dict[str, int] = {}
    for e in loud:
        kinds[str(e.get("event"))] = kinds.get(str(e.get("event")), 0) + 1
    progress = sum(
        1 for e in events if isinstance(e, dict) and e.get("event") == "baseline_progress"
    )
    done = steady["baseline_done"]
    whole = steady["whole_wall"]
    print(
        f"cold start: baseline ended {'never' if done is None else f'{done:.0f}s'} after the "
        f"daemon's start; {progress} baseline_progress lines; warnings and errors logged: "
        f"{len(loud)} {kinds or ''}"
    )
    print(
        f"cold start: daemon CPU over the whole run {cpu_total:.1f}s in {whole:.0f}s = "
        f"{100 * cpu_total / whole:.1f}% of one core"
    )


def report(
    args: argparse.Namespace,
    steady: dict[str, Any],
    latencies: dict[str, Any],
    missing: int,
    max_rss: float,
    rss_live: float,
    baseline_took: float | None,
) -> None:
    sessions, interval = args.sessions, args.interval
    before, after = requests_by_kind(steady["before"]), requests_by_kind(steady["after"])
    delta = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after}
    listing_pages = math.ceil(sessions / 1000)
    cycles = delta.get("sessions", 0) / listing_pages
    total = sum(delta.values())
    per_cycle = total / cycles if cycles else float("nan")
    naive = sessions * math.ceil(INTERACTIONS_PER_SESSION / 1000)
    naive_cycle = naive / SIM_RATE
    created = latencies["created"]
    updated = latencies["updated"]
    cpu_pct = 100 * steady["cpu"] / steady["wall"]
    wall = steady["wall"]
    print()
    print(
        f"steady phase {wall:.0f}s: {steady['traffic']['created']} interactions created, "
        f"{steady['traffic']['changes']} changes; {cycles:.1f} cycles; "
        f"{total} requests ({delta.get('sessions', 0)} Sessions-list pages, "
        f"{delta.get('interactions', 0)} Interactions lists); 429s: "
        f"{throttled(steady['after']) - throttled(steady['before'])}"
    )
    rows = [
        ["requests per cycle", f"{per_cycle:.1f}", f"{naive:,}", "-"],
        [
            "seconds of Proxy quota per cycle (30/s)",
            f"{per_cycle / SIM_RATE:.1f}",
            f"{naive_cycle:.0f}",
            f"< {interval:g} (the interval)",
        ],
        [
            "creation -> delivery p50 s",
            f"{percentile(created, 0.5):.1f}",
            f">= {naive_cycle / 2:.0f}",
            "-",
        ],
        [
            "creation -> delivery p99 s",
            f"{percentile(created, 0.99):.1f}",
            f">= {naive_cycle * 0.99:.0f}",
            f"< 20; ~2 intervals = {2 * interval:g}",
        ],
        ["creation -> delivery max s", f"{max(created, default=float('nan')):.1f}", "-", "-"],
        [
            "status change -> delivery p50 / p99 s",
            f"{percentile(updated, 0.5):.1f} / {percentile(updated, 0.99):.1f}",
            "-",
            "-",
        ],
        ["daemon CPU, % of one core", f"{cpu_pct:.1f}", "-", "< 20"],
        ["daemon peak RSS MiB (ru_maxrss)", f"{max_rss:.0f}", "-", "< 150"],
    ]
    print(table(rows, ["measure", "poller", "naive: every session every cycle", "goal"]))
    print(
        f"created interactions delivered: {len(created)} of {latencies['created_total']} "
        f"({missing} missing after the catch-up); status changes delivered: {len(updated)} of "
        f"{latencies['updates_total']} (a change superseded within one poll is folded into "
        f"the next); VmHWM before stop {rss_live:.0f} MiB"
    )
    if baseline_took is not None:
        print(f"baseline of {sessions:,} sessions took {baseline_took:.1f}s")
    print()
    print(ratio_line("poller/naive requests per cycle", per_cycle / naive))
    print(
        ratio_line(
            "poller p99 latency/naive cycle time",
            percentile(created, 0.99) / naive_cycle,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 sessions, 25 s: a smoke run")
    parser.add_argument("--minutes", type=float, default=None, help="steady phase (default 3)")
    parser.add_argument("--sessions", type=int, default=None, help="default 5,000")
    parser.add_argument("--interval", type=float, default=None, help="default 10 s")
    parser.add_argument(
        "--baseline-under-limit",
        action="store_true",
        help="let the daemon baseline under the 30/s limit (adds ~200 s at 5,000 sessions)",
    )
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="no baseline beforehand: the daemon baselines under the limit, traffic from second 20",
    )
    args = parser.parse_args()
    if args.cold_start and args.baseline_under_limit:
        parser.error("--cold-start and --baseline-under-limit exclude each other")
    if args.quick:
        args.sessions = args.sessions or 500
        args.minutes = args.minutes or 25 / 60
        args.interval = args.interval or 5.0
    args.sessions = args.sessions or 5000
    args.minutes = args.minutes if args.minutes is not None else 3.0
    args.interval = args.interval or 10.0
    run(args)


if __name__ == "__main__":
    main()
