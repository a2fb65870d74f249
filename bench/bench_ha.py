"""HA: three replicas on one PostgreSQL against one process per Service on SQLite, same run.

Six Services x 1,000 sessions (10 interactions each) in the lab's simulator (30 requests/s per
Service, bursts of 150), live traffic on 50 sessions of each Service (12 changes/s in all:
half creations, half status steps), delivered to the lab's signature-verifying receiver.

1. **Baseline of the comparison**: six ``poller run`` processes, each watching one Service
   with a SQLite state of its own (what one runs without HA), after a ``poller once``
   baseline each (the simulator's limit lifted for it). Steady traffic for ``--minutes``:
   creation -> delivery p50/p99 (detection included: the lab notes when the simulator made
   an interaction and when the receiver accepted its event).
2. **Three replicas** (``POLLER_REPLICA_ID`` r1..r3) on one PostgreSQL database, the same
   six Services: they baseline themselves (limit lifted), then the same steady traffic: the
   same latencies (ratio against 1, goal within 1.2x), and the database's work per Service
   cycle from ``pg_stat_database`` (``xact_commit``; ``tup_inserted`` + ``tup_updated`` +
   ``tup_deleted``) over the steady phase, cycles counted on the simulator (Sessions
   listings).
3. **Takeover** under traffic: SIGKILL the replica holding most leases, time until each of
   its Services is leased (live, by the database's clock) to another replica; restart it,
   let it take its share; SIGTERM the one holding most, the same.
4. **The outbox after an hour-equivalent**: as many changes as an hour of the steady traffic
   makes (12/s x 3,600), pushed five times as fast; once delivered, the rows left in
   ``deliveries`` and ``events``, their size on disk and dead tuples (``pg_stat_user_tables``).

The database: ``--pg-url`` (an empty database), else a throwaway cluster made with the
machine's ``initdb`` (as in the tests). ``--quick``: 200 sessions per Service, 20 s phases,
3 s leases, a 2,000-change "hour": a smoke run (~3 min).

    python bench/bench_ha.py [--quick] [--minutes M] [--sessions N] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (
    PYTHON,
    ROOT,
    Lab,
    LabInfo,
    LabOptions,
    free_port,
    machine,
    percentile,
    proc_cpu_seconds,
    ratio_line,
    stop_child,
    table,
)

SERVICES = 6
REPLICAS = 3
SIM_RATE = 30.0
SIM_BURST = 150.0
ACTIVE_PER_SERVICE = 50
CHANGES_PER_SECOND = 12.0
HOUR_SPEED_UP = 5.0
INTERACTIONS_PER_SESSION = 10


class Daemon:
    """One ``poller run`` child: its config, environment, health port and log."""

    def __init__(self, name: str, config: Path, env: dict[str, str], folder: Path) -> None:
        self.name, self.config, self.folder = name, config, folder
        self.env = {**os.environ, **env, "POLLER_REPLICA_ID": name}
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.started = 0.0
        self.starts = 0

    def start(self) -> Daemon:
        self.starts += 1
        self.port = free_port()
        self.env["BENCH_LISTEN"] = f"127.0.0.1:{self.port}"
        log = (self.folder / f"{self.name}-{self.starts}.log").open("w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "poller", "run", "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=ROOT,
        )
        log.close()
        return self

    def alive(self) -> bool:
        """True while it runs; exit the bench if it ended by itself."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            sys.exit(f"{self.name} exited with {self.proc.returncode}; see {self.folder}")
        return True

    def ready(self) -> bool:
        self.alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as a:
                return bool(a.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def cpu(self) -> float:
        return proc_cpu_seconds(self.proc.pid) if self.proc and self.proc.poll() is None else 0.0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def reap(self) -> int:
        assert self.proc is not None
        return self.proc.wait(60)

    def stop(self) -> int:
        assert self.proc is not None
        return stop_child(self.proc, self.started).code


def until(condition: Any, timeout: float, what: str, step: float = 0.05) -> float:
    """Wait for ``condition()``; return the seconds it took (exit the bench on a timeout)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            sys.exit(f"bench_ha: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - started


def write_config(
    folder: Path,
    name: str,
    info: LabInfo,
    services: Sequence[str],
    state: dict[str, Any],
    interval: float,
) -> Path:
    import yaml

    config: dict[str, Any] = {
        "twilio": {
            "account_sid": info.account_sid,
            "auth_token": "${BENCH_TWILIO_AUTH_TOKEN}",
            "base_url": info.base_url,
            "page_size": 1000,
            "max_requests_per_second": 25,
        },
        "state": state,
        "poll": {"interval_seconds": interval, "first_run": "baseline"},
        "watch": [{"service_sid": sid, "all_sessions": True} for sid in services],
        "sinks": [
            {
                "name": "bench",
                "type": "webhook",
                "url": f"{info.receiver_url}/hooks/bench",
                "secret": "${BENCH_WEBHOOK_SECRET}",
            }
        ],
        "http": {"listen": "${BENCH_LISTEN}"},
        "log": {"format": "json", "level": "warning"},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def active_sessions(info: LabInfo, per_service: int) -> list[str]:
    total = len(info.sessions) // max(1, len(info.service_sids))
    return [
        s
        for i in range(len(info.service_sids))
        for s in info.sessions[i * total : i * total + per_service]
    ]


def steady(
    lab: Lab, info: LabInfo, seconds: float, rate: float = CHANGES_PER_SECOND
) -> dict[str, Any]:
    """Traffic for ``seconds``, then every creation delivered; the latencies of this phase."""
    since = time.time()
    lab.call("start_traffic", rate=rate, sessions=active_sessions(info, ACTIVE_PER_SERVICE))
    time.sleep(seconds)  # the phase's length: traffic runs meanwhile
    traffic = lab.call("stop_traffic")
    missing = lab.call("wait_delivered", seconds=120)["missing"]
    return {"traffic": traffic, "missing": missing, **lab.call("latencies", since=since)}


# -- phase 1: one process per Service on SQLite ------------------------------------------------


def phase_sqlite(
    lab: Lab, folder: Path, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    info = lab.info
    daemons: list[Daemon] = []
    lab.call("rate_limit", rate=None)
    baselines = []
    for n, sid in enumerate(info.service_sids):
        sub = folder / f"sqlite-{n}"
        sub.mkdir()
        config = write_config(
            sub, "config", info, [sid], {"path": str(sub / "state.db")}, args.interval
        )
        daemons.append(Daemon(f"s{n}", config, env, sub))
        baselines.append(
            subprocess.Popen(
                [PYTHON, "-m", "poller", "once", "-c", str(config)],
                env={**os.environ, **env, "BENCH_LISTEN": "127.0.0.1:0"},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    for child in baselines:
        if child.wait(900) != 0:
            sys.exit("bench_ha: a SQLite baseline (poller once) failed")
    lab.call("rate_limit", rate=SIM_RATE, burst=SIM_BURST)
    try:
        for daemon in daemons:
            daemon.start()
        until(lambda: all(d.ready() for d in daemons), 120, "the SQLite pollers' first cycle", 0.5)
        cpu = sum(d.cpu() for d in daemons)
        measured = steady(lab, info, args.seconds)
        measured["cpu"] = sum(d.cpu() for d in daemons) - cpu
    finally:
        for daemon in daemons:
            daemon.stop()
    return measured


# -- phase 2: three replicas on PostgreSQL ---------------------------------------------------------


def pg(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql).fetchall())


def db_counters(url: str) -> dict[str, int]:
    (row,) = pg(
        url,
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
        "WHERE datname = current_database()",
    )
    return dict(zip(("commits", "inserted", "updated", "deleted"), map(int, row), strict=True))


def owners(url: str) -> dict[str, str]:
    rows = pg(
        url, "SELECT service_sid, owner FROM leases WHERE owner IS NOT NULL AND expires_at > now()"
    )
    return {str(sid): str(owner) for sid, owner in rows}


def listings(lab: Lab) -> int:
    return int(sum(lab.call("stats")["requests"].get("sessions", {}).values()))


def phase_replicas(
    lab: Lab, folder: Path, env: dict[str, str], url: str, args: argparse.Namespace
) -> dict[str, Any]:
    info = lab.info
    state = {"url": url, "lease_seconds": args.lease}
    config = write_config(folder, "replicas", info, info.service_sids, state, args.interval)
    replicas = [Daemon(f"r{n + 1}", config, env, folder) for n in range(REPLICAS)]
    out: dict[str, Any] = {}
    from tests.replicas_support import migrate

    migrate(url)  # as the first replica's start would: the tables exist from the first look
    lab.call("rate_limit", rate=None)
    try:
        for replica in replicas:
            replica.start()
        total = len(info.sessions)
        took = until(
            lambda: (
                all(r.alive() for r in replicas)
                and int(pg(url, "SELECT count(*) FROM sessions WHERE baselined")[0][0]) >= total
            ),
            900,
            "the replicas' baseline",
            1.0,
        )
        print(f"replicas baselined {total:,} sessions in {took:.0f}s (limit lifted)", flush=True)
        lab.call("rate_limit", rate=SIM_RATE, burst=SIM_BURST)
        until(
            lambda: all(r.ready() for r in replicas) and len(owners(url)) == SERVICES,
            120,
            "every Service leased",
            0.5,
        )
        before, cycles, cpu = db_counters(url), listings(lab), sum(r.cpu() for r in replicas)
        out.update(steady(lab, info, args.seconds))
        out["cpu"] = sum(r.cpu() for r in replicas) - cpu
        out["cycles"] = (listings(lab) - cycles) / max(1, math.ceil(args.sessions / 1000))
        after = db_counters(url)
        out["db"] = {k: after[k] - before[k] for k in after}
        out["shares"] = sorted(list(owners(url).values()).count(r.name) for r in replicas)
        out["takeover"] = takeovers(lab, url, replicas, args)
        out["outbox"] = hour(lab, url, args)
    finally:
        for replica in replicas:
            replica.kill()
    return out


def takeovers(
    lab: Lab, url: str, replicas: list[Daemon], args: argparse.Namespace
) -> dict[str, float]:
    """Under traffic: SIGKILL, then SIGTERM, the replica holding most leases; time the takeover."""
    active = active_sessions(lab.info, ACTIVE_PER_SERVICE)
    lab.call("start_traffic", rate=CHANGES_PER_SECOND, sessions=active)
    result: dict[str, float] = {}
    try:
        for how in ("SIGKILL", "SIGTERM"):
            seconds, services = takeover(url, replicas, how, args.lease)
            result[how], result[f"{how} services"] = seconds, services
    finally:
        lab.call("stop_traffic")
    lab.call("wait_delivered", seconds=120)
    return result


def takeover(url: str, replicas: list[Daemon], how: str, lease: float) -> tuple[float, int]:
    held = owners(url)
    victim = max(replicas, key=lambda r: list(held.values()).count(r.name))
    mine = [sid for sid, owner in held.items() if owner == victim.name]
    if how == "SIGKILL":
        victim.kill()
    else:
        victim.terminate()

    def taken() -> bool:
        now = owners(url)
        return all(now.get(sid) not in (None, victim.name) for sid in mine)

    seconds = until(taken, 4 * lease + 60, f"a takeover after {how}")
    victim.reap()
    victim.start()
    until(
        lambda: victim.name in owners(url).values(),
        6 * lease + 60,
        f"{victim.name} to take its share again",
        0.2,
    )
    return seconds, len(mine)


def hour(lab: Lab, url: str, args: argparse.Namespace) -> dict[str, Any]:
    changes, rate = args.hour_changes, CHANGES_PER_SECOND * HOUR_SPEED_UP
    print(f"hour-equivalent: {changes:,} changes at {rate:g}/s ...", flush=True)
    lab.call("start_traffic", rate=rate, sessions=active_sessions(lab.info, ACTIVE_PER_SERVICE * 2))
    time.sleep(changes / rate)  # the changes are made meanwhile
    lab.call("stop_traffic")
    missing = lab.call("wait_delivered", seconds=300)["missing"]
    until(
        lambda: int(pg(url, "SELECT count(*) FROM deliveries WHERE state = 'pending'")[0][0]) == 0,
        120,
        "the outbox to drain",
        0.5,
    )
    rows = pg(
        url,
        "SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) "
        "FROM pg_stat_user_tables WHERE relname IN ('deliveries', 'events', 'interactions') "
        "ORDER BY relname",
    )
    counted = {
        "deliveries": int(pg(url, "SELECT count(*) FROM deliveries")[0][0]),
        "events": int(pg(url, "SELECT count(*) FROM events")[0][0]),
    }
    return {"missing": missing, "tables": rows, "rows": counted, "changes": changes}


# -- the report ------------------------------------------------------------------------------------


def report(args: argparse.Namespace, single: dict[str, Any], ha: dict[str, Any]) -> None:
    def p(d: dict[str, Any], q: float) -> float:
        return percentile(d["created"], q)

    cycles = ha["cycles"] or float("nan")
    db = ha["db"]
    rows = db["inserted"] + db["updated"] + db["deleted"]
    per_k = 1000 / args.sessions
    print()
    print(
        table(
            [
                ["creation -> delivery p50 s", f"{p(single, 0.5):.2f}", f"{p(ha, 0.5):.2f}"],
                ["creation -> delivery p99 s", f"{p(single, 0.99):.2f}", f"{p(ha, 0.99):.2f}"],
                [
                    "interactions delivered / created",
                    f"{len(single['created'])} / {single['created_total']}",
                    f"{len(ha['created'])} / {ha['created_total']}",
                ],
                [
                    "CPU of the pollers, % of one core",
                    f"{100 * single['cpu'] / args.seconds:.1f}",
                    f"{100 * ha['cpu'] / args.seconds:.1f}",
                ],
            ],
            [
                "steady phase",
                f"{SERVICES} x SQLite, one per Service",
                f"{REPLICAS} replicas, PostgreSQL",
            ],
        )
    )
    print()
    print(
        f"database work over the steady phase ({args.seconds:.0f}s, {cycles:.0f} Service "
        f"cycles of {args.sessions:,} sessions):"
    )
    for what, count in (("transactions committed", db["commits"]), ("rows written", rows)):
        print(
            f"  {what} {count:,}: {count / cycles:.1f} per Service cycle, "
            f"{count / cycles * per_k:.1f} per cycle per 1,000 sessions"
        )
    print(
        f"  rows: inserted {db['inserted']:,}, updated {db['updated']:,}, deleted "
        f"{db['deleted']:,}; leases per replica when settled: {ha['shares']}"
    )
    t = ha["takeover"]
    print(
        f"takeover after SIGKILL: {t['SIGKILL']:.2f}s for {t['SIGKILL services']:.0f} Services "
        f"(lease {args.lease:g}s + interval {args.interval:g}s = {args.lease + args.interval:g}s)"
    )
    print(f"takeover after SIGTERM: {t['SIGTERM']:.2f}s for {t['SIGTERM services']:.0f} Services")
    o = ha["outbox"]
    print(
        f"outbox after an hour-equivalent ({o['changes']:,} changes; {o['missing']} creations "
        f"undelivered): rows left deliveries={o['rows']['deliveries']}, "
        f"events={o['rows']['events']}"
    )
    for name, live, dead, size in o["tables"]:
        print(f"  {name}: ~{live:,} live / {dead:,} dead tuples, {size / 1024:.0f} KiB")
    print()
    print(
        ratio_line("replicas/single p50 creation->delivery", p(ha, 0.5) / p(single, 0.5), "<= 1.2")
    )
    print(
        ratio_line(
            "replicas/single p99 creation->delivery", p(ha, 0.99) / p(single, 0.99), "<= 1.2"
        )
    )


def database(stack: ExitStack, given: str | None) -> str:
    if given:
        return given
    from tests.postgres import Cluster, Server, find_bindir

    bindir = find_bindir()
    if bindir is None:
        sys.exit("bench_ha: no PostgreSQL here: pass --pg-url, or install initdb and pg_ctl")
    cluster = Cluster.create(bindir)
    stack.callback(cluster.remove)
    cluster.start()
    server = Server(cluster.url, cluster)
    return server.database_url(server.create_database())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (~3 min)")
    parser.add_argument("--minutes", type=float, default=None, help="each steady phase (3)")
    parser.add_argument("--sessions", type=int, default=None, help="per Service (1,000)")
    parser.add_argument("--interval", type=float, default=None, help="poll interval (10 s)")
    parser.add_argument("--lease", type=float, default=None, help="state.lease_seconds (15)")
    parser.add_argument("--hour-changes", type=int, default=None, help="12/s x 3,600")
    parser.add_argument("--pg-url", default=None, help="an empty database (else a cluster)")
    parser.add_argument("--keep", default=None, help="a folder for configs and logs (temp)")
    args = parser.parse_args()
    quick = args.quick
    args.sessions = args.sessions or (200 if quick else 1000)
    args.seconds = 60 * (args.minutes if args.minutes is not None else (1 / 3 if quick else 3.0))
    args.interval = args.interval or (3.0 if quick else 10.0)
    args.lease = args.lease or (3.0 if quick else 15.0)
    args.hour_changes = args.hour_changes or (2000 if quick else int(CHANGES_PER_SECOND * 3600))
    print(
        f"bench_ha: {SERVICES} Services x {args.sessions:,} sessions x {INTERACTIONS_PER_SESSION} "
        f"interactions, {ACTIVE_PER_SERVICE} active per Service, {CHANGES_PER_SECOND:g} changes/s "
        f"for {args.seconds:.0f}s per phase, interval {args.interval:g}s, lease {args.lease:g}s"
    )
    print(f"machine: {machine()}")
    options = LabOptions(
        receiver=True,
        rate_limit=SIM_RATE,
        burst=SIM_BURST,
        sessions=args.sessions,
        interactions_per_session=INTERACTIONS_PER_SESSION,
        services=SERVICES,
    )
    with ExitStack() as stack:
        url = database(stack, args.pg_url)
        folder = Path(args.keep) if args.keep else None
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ha-")))
        folder.mkdir(parents=True, exist_ok=True)
        lab = stack.enter_context(Lab(options))
        env = {"BENCH_TWILIO_AUTH_TOKEN": lab.info.auth_token, "BENCH_WEBHOOK_SECRET": _secret()}
        single = phase_sqlite(lab, folder, env, args)
        print(
            f"single: p50 {percentile(single['created'], 0.5):.2f}s "
            f"p99 {percentile(single['created'], 0.99):.2f}s",
            flush=True,
        )
        ha = phase_replicas(lab, folder, env, url, args)
    report(args, single, ha)


def _secret() -> str:
    from _common import WEBHOOK_SECRET

    return WEBHOOK_SECRET


if __name__ == "__main__":
    main()
