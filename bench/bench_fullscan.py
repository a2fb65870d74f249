"""Full scan with nothing new: 1,000 sessions x 50 interactions, every session read once.

Three clients read the same simulator (its own process, rate limit off), each in a child
process of its own so its CPU (``wait4`` rusage, and ``time.process_time`` around the work
alone) is its own:

- baseline: the loop people write with the official ``twilio`` SDK (``sessions.stream`` then
  ``interactions.stream(page_size=1000)`` per session, a JSON file of seen interactions);
- floor: a bare aiohttp loop fetching and parsing the same pages, 8 at a time;
- the poller: ``poller once`` semantics on a baselined state (every session polled, diffed and
  committed, nothing new), with ``max_requests_per_second: 10000`` (the highest the config
  accepts, for a private proxy or the simulator): the simulator has no limit either;
- the same, as the real ``poller once -c FILE`` command: its process CPU is the full scan
  with start-up included, compared with the SDK loop's process.

Bytecode: every child runs with bytecode caching on, in a temporary ``PYTHONPYCACHEPREFIX``
(an installed poller has its ``.pyc`` files; an editable checkout under
``PYTHONDONTWRITEBYTECODE=1`` would compile every module at every start), warmed by the
unmeasured first run of each client.

Each role imports its libraries before it starts its clocks, so "the work alone" leaves out
imports for all three (the process columns include them). The three run in turn, ``--repeat``
rounds (3), and each keeps its run with the lowest CPU: the machine is shared.

Then, in this process and without the network, the state side of the same unchanged polls is
timed three ways: the known set read twice, read once, and the unchanged shortcut.

Then the history's cost, before/after in the same run: two more ``poller once`` states, with
``delivery.history_seconds: 0`` and at the default (7 days). Before each round one session in
ten gets a new interaction, so both polls find, commit and deliver the same events (to a
receiver in the lab), and the second also keeps them and their attempts; each keeps its
lowest-CPU round, and the two run in alternating order.

``--instructions`` also counts the instructions of one more run of the ``poller once`` command
and of the SDK loop (``valgrind --tool=callgrind``, on the same lab and state, after the
rounds): the same count however loaded the machine is, where the process CPU of one client
varies by 10 to 20% from round to round. It takes about five minutes more.

    python bench/bench_fullscan.py [--quick] [--sessions N] [--interactions N] [--repeat N]
                                   [--instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PYTHON,
    Finished,
    Lab,
    LabOptions,
    check_json_child,
    instructions,
    machine,
    ratio_line,
    run_child,
    table,
    write_config,
)

CONCURRENCY = 8
SERVICE_SID = "KS" + "0" * 32
SINKS = ("bench",)  # where a changed session's events would go (none change here)
RATE = 10_000.0  # twilio.max_requests_per_second: the highest the config accepts
POLLER = "poller once (10,000 req/s)"
POLLER_CLI = "poller once, the command (start-up included)"
SDK = "twilio SDK loop (baseline)"
POLLER_COMMAND = str(Path(PYTHON).parent / "poller")
ROLE_TIMEOUT = 600.0


# -- roles (each runs in its own child process) ---------------------------------------------------


def role_sdk(args: argparse.Namespace) -> dict[str, Any]:
    from twilio.rest import Client

    started_wall, started_cpu = time.monotonic(), time.process_time()
    client = Client(args.account, os.environ["BENCH_TWILIO_AUTH_TOKEN"])
    # The SDK has no base-URL option; its Proxy domain keeps the host in ``base_url``.
    client.proxy.base_url = args.url
    seen_path = Path(args.seen)
    seen: dict[str, list[Any]] = json.loads(seen_path.read_text()) if seen_path.exists() else {}
    service = client.proxy.v1.services(args.service)
    new = changed = 0
    for session in service.sessions.stream(page_size=1000):
        for interaction in service.sessions(session.sid).interactions.stream(page_size=1000):
            fingerprint = [
                str(interaction.date_updated),
                interaction.inbound_resource_status,
                interaction.outbound_resource_status,
            ]
            before = seen.get(interaction.sid)
            if before is None:
                new += 1
            elif before != fingerprint:
                changed += 1
            seen[interaction.sid] = fingerprint
    seen_path.write_text(json.dumps(seen))
    return {
        "wall": time.monotonic() - started_wall,
        "cpu": time.process_time() - started_cpu,
        "new": new,
        "changed": changed,
        "tracked": len(seen),
    }


async def _floor(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    auth = aiohttp.BasicAuth(args.account, os.environ["BENCH_TWILIO_AUTH_TOKEN"])
    pages = records = 0
    async with aiohttp.ClientSession(
        auth=auth, connector=aiohttp.TCPConnector(limit=CONCURRENCY)
    ) as http:

        async def read_all(url: str, key: str) -> list[dict[str, Any]]:
            nonlocal pages
            items: list[dict[str, Any]] = []
            next_url: str | None = url
            while next_url:
                async with http.get(next_url) as response:
                    response.raise_for_status()
                    body = json.loads(await response.read())
                pages += 1
                items += body[key]
                next_url = body["meta"]["next_page_url"]
            return items

        base = f"{args.url}/v1/Services/{args.service}/Sessions"
        sessions = await read_all(f"{base}?PageSize=1000", "sessions")
        queue: asyncio.Queue[str] = asyncio.Queue()
        for session in sessions:
            queue.put_nowait(session["sid"])

        async def worker() -> None:
            nonlocal records
            while not queue.empty():
                sid = queue.get_nowait()
                items = await read_all(f"{base}/{sid}/Interactions?PageSize=1000", "interactions")
                records += len(items)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return {"pages": pages, "records": records}


def role_floor(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp  # noqa: F401 - imported before the clocks start, as the other roles do

    started_wall, started_cpu = time.monotonic(), time.process_time()
    result = asyncio.run(_floor(args))
    return {
        "wall": time.monotonic() - started_wall,
        "cpu": time.process_time() - started_cpu,
        **result,
    }


def role_poller(args: argparse.Namespace) -> dict[str, Any]:
    from poller.config import load_config
    from poller.observe.logs import configure_logging
    from poller.once import once_from_config
    from poller.state.open import open_store

    started_wall, started_cpu = time.monotonic(), time.process_time()
    started_thread = time.thread_time()
    config = load_config(args.config)
    configure_logging(config.log.format, config.log.level, stream=sys.stderr)

    async def once() -> int:
        return await once_from_config(config, await open_store(config.state))

    code = asyncio.run(once())
    if code != 0:
        sys.exit(f"poller once exited {code}")
    return {
        "wall": time.monotonic() - started_wall,
        "cpu": time.process_time() - started_cpu,
        "main_thread_cpu": time.thread_time() - started_thread,
    }


ROLES = {"sdk": role_sdk, "floor": role_floor, "poller": role_poller}


# -- the benchmark ------------------------------------------------------------------------------


def _role(role: str, env: dict[str, str], *extra: str) -> tuple[Finished, dict[str, Any]]:
    if role == "cli":
        finished = run_child([POLLER_COMMAND, "once", *extra], env=env, timeout=ROLE_TIMEOUT)
        if finished.code != 0:
            sys.exit(f"poller once exited {finished.code}:\n{finished.stderr[-3000:]}")
        return finished, {"wall": finished.wall, "cpu": finished.cpu}
    argv = [PYTHON, __file__, "--role", role, *extra]
    finished = run_child(argv, env=env, timeout=ROLE_TIMEOUT)
    return finished, check_json_child(finished, role)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 sessions: a smoke run")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--interactions", type=int, default=50)
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of every client; each keeps its lowest CPU"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions too (needs valgrind)"
    )
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--account", help=argparse.SUPPRESS)
    parser.add_argument("--service", help=argparse.SUPPRESS)
    parser.add_argument("--seen", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is not None:
        print(json.dumps(ROLES[args.role](args)))
        return
    if args.instructions and shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    sessions = args.sessions or (200 if args.quick else 1000)
    run(sessions, args.interactions, max(1, args.repeat), counting=args.instructions)


def run(sessions: int, interactions: int, repeat: int = 3, *, counting: bool = False) -> None:
    print(f"bench_fullscan: {sessions} sessions x {interactions} interactions, nothing new")
    print(f"machine: {machine()}")
    options = LabOptions(
        rate_limit=None, sessions=sessions, interactions_per_session=interactions, receiver=True
    )
    with Lab(options) as lab, tempfile.TemporaryDirectory(prefix="bench-fullscan-") as tmp:
        folder = Path(tmp)
        info = lab.info
        config, env = write_config(folder, info, rate=RATE, concurrency=CONCURRENCY)
        env.update(PYTHONPYCACHEPREFIX=str(folder / "pycache"), PYTHONDONTWRITEBYTECODE="")
        common = ["--url", info.base_url, "--account", info.account_sid]
        common += ["--service", info.service_sid]
        seen = str(folder / "seen.json")
        clients: dict[str, list[str]] = {}
        try:
            import twilio  # noqa: F401

            _role("sdk", env, *common, "--seen", seen)  # first run: fills the seen file
            clients[SDK] = ["sdk", *common, "--seen", seen]
        except ImportError:
            print("the twilio SDK is not installed: `pip install twilio` for the baseline")
        clients["bare aiohttp, 8 at a time (floor)"] = ["floor", *common]
        _role("floor", env, *common)  # not measured: writes its bytecode
        _role("poller", env, "--config", str(config))  # the baseline poll: not measured
        clients[POLLER] = ["poller", "--config", str(config)]
        clients[POLLER_CLI] = ["cli", "-c", str(config)]
        # Round after round of every client, so that other work on the machine falls on all
        # of them alike; each keeps its run with the lowest CPU.
        results: dict[str, tuple[Finished, dict[str, Any]]] = {}
        for _ in range(repeat):
            for name, argv in clients.items():
                finished, work = _role(argv[0], env, *argv[1:])
                if name not in results or work["cpu"] < results[name][1]["cpu"]:
                    results[name] = (finished, work)
        stats = lab.call("stats")
        counted = _count(clients, env) if counting and SDK in clients else None
        history = _history_before_after(lab, folder, env, repeat)
    _report(results, stats)
    if counted is not None:
        _report_instructions(counted)
    _report_history(history)
    asyncio.run(_report_commit_paths(sessions, interactions))


def _count(clients: dict[str, list[str]], env: dict[str, str]) -> tuple[int, int]:
    """Instructions of one run of the ``poller once`` command and of the SDK loop's process."""
    sdk = [PYTHON, __file__, "--role", *clients[SDK]]
    command = [POLLER_COMMAND, "once", *clients[POLLER_CLI][1:]]
    timeout = ROLE_TIMEOUT * 5
    return instructions(command, env, timeout), instructions(sdk, env, timeout)


def _report_instructions(counted: tuple[int, int]) -> None:
    command, sdk = counted
    print("\ninstructions of one run each (valgrind --tool=callgrind):")
    print(f"the poller once command {command / 1e6:,.0f} M, the SDK loop {sdk / 1e6:,.0f} M")
    print(
        ratio_line(
            "poller once command/SDK process instructions (start-up included)",
            command / sdk,
            "<= 0.35",
        )
    )


def _report(results: dict[str, tuple[Finished, dict[str, Any]]], stats: dict[str, Any]) -> None:
    rows = [
        [name, work["wall"], work["cpu"], proc.wall, proc.cpu, round(proc.max_rss_mb, 1)]
        for name, (proc, work) in results.items()
    ]
    print()
    print(
        table(
            rows,
            ["client", "wall s", "cpu s", "process wall s", "process cpu s", "peak RSS MiB"],
        )
    )
    print(f"simulator requests served in total: {stats['total_requests']}")
    print("(wall/cpu: the work alone; process: the whole child, interpreter start and imports;")
    print(" each client's run with the lowest cpu)")
    print()
    poller = results[POLLER][1]
    floor = results["bare aiohttp, 8 at a time (floor)"][1]
    sdk = results.get(SDK)
    if sdk is not None:
        print(ratio_line("poller/SDK cpu", poller["cpu"] / sdk[1]["cpu"], "<= 0.4"))
        print(ratio_line("poller/SDK wall", poller["wall"] / sdk[1]["wall"], "<= 0.25"))
        command = results[POLLER_CLI][0]
        print(
            ratio_line(
                "poller once command/SDK process cpu (start-up included)",
                command.cpu / sdk[0].cpu,
                "<= 0.35",
            )
        )
    print(ratio_line("poller/floor cpu", poller["cpu"] / floor["cpu"], "<= 2"))
    print(ratio_line("poller/floor wall", poller["wall"] / floor["wall"], "<= 1.5"))


# -- the history's cost: the same full scan with new events, history_seconds 0 vs the default -----

HISTORY_OFF = "history_seconds 0"
HISTORY_ON = "history kept (default, 7 days)"


def _history_configs(folder: Path, info: Any) -> dict[str, Path]:
    import yaml

    configs: dict[str, Path] = {}
    for name, seconds in ((HISTORY_OFF, 0), (HISTORY_ON, None)):
        home = folder / ("history-off" if seconds == 0 else "history-on")
        home.mkdir()
        path, _ = write_config(
            home, info, rate=RATE, concurrency=CONCURRENCY, receiver_url=info.receiver_url
        )
        if seconds is not None:
            config = yaml.safe_load(path.read_text())
            config["delivery"]["history_seconds"] = seconds
            path.write_text(yaml.safe_dump(config, sort_keys=False))
        configs[name] = path
    return configs


def _history_before_after(
    lab: Lab, folder: Path, env: dict[str, str], repeat: int
) -> dict[str, dict[str, Any]]:
    """Each config's lowest-CPU ``poller once`` over rounds that each bring new events."""
    info = lab.info
    configs = _history_configs(folder, info)
    for config in configs.values():
        _role("poller", env, "--config", str(config))  # the baseline poll: not measured
    every_tenth = info.sessions[::10]
    best: dict[str, dict[str, Any]] = {}
    for round_ in range(repeat):
        lab.call("add_interactions", service_sid=info.service_sid, sessions=every_tenth)
        names = list(configs) if round_ % 2 == 0 else list(reversed(configs))
        for name in names:
            _, work = _role("poller", env, "--config", str(configs[name]))
            if name not in best or work["cpu"] < best[name]["cpu"]:
                best[name] = {**work, "events": len(every_tenth)}
    received = lab.call("count_received")["received"]
    if received != repeat * len(every_tenth):  # both deliver the same ids: counted once
        sys.exit(f"the receiver has {received} events, not {repeat * len(every_tenth)}")
    return best


def _report_history(best: dict[str, dict[str, Any]]) -> None:
    off, on = best[HISTORY_OFF], best[HISTORY_ON]
    print()
    print(f"the full scan with {off['events']} new events per round, delivered (lowest cpu):")
    rows = [[name, round(w["wall"], 3), round(w["cpu"], 3)] for name, w in best.items()]
    print(table(rows, ["poller once", "wall s", "cpu s"]))
    print(ratio_line("history kept/history_seconds 0 cpu", on["cpu"] / off["cpu"], "<= 1.20"))
    print(ratio_line("history kept/history_seconds 0 wall", on["wall"] / off["wall"]))


# -- what an unchanged session's diff and commit cost, by the path taken ---------------------------


async def _report_commit_paths(sessions: int, interactions: int, rounds: int = 5) -> None:
    """Time the state side of polls that find nothing new, in this process (no network).

    The same sessions three ways: the known set read twice (for the diff, then again inside
    ``commit_poll``), read once (``commit_poll(known=...)``), and the unchanged shortcut
    (compare, then ``commit_unchanged``). The lowest of ``rounds`` rounds is kept.
    """
    from poller.detect.diff import _changes, diff
    from poller.observe.logs import configure_logging
    from poller.state.sqlite.store import SqliteStore
    from poller.twilio.records import Interaction

    def record(session: int, n: int) -> Interaction:
        built = Interaction.from_api(
            {
                "sid": f"KI{session:016d}{n:016d}",
                "date_created": "2026-11-27T10:00:00Z",
                "date_updated": "2026-11-27T10:00:05Z",
                "inbound_resource_status": "received",
                "outbound_resource_status": "delivered",
            }
        )
        assert built is not None
        return built

    configure_logging("console", "warning", stream=sys.stderr)
    sids = [f"KC{n:032d}" for n in range(sessions)]
    fetched = {sid: [record(i, n) for n in range(interactions)] for i, sid in enumerate(sids)}
    detected = "2026-11-27T11:00:00Z"

    with tempfile.TemporaryDirectory(prefix="bench-fullscan-") as tmp:
        store = SqliteStore.open(Path(tmp) / "state.db")
        for sid in sids:
            first = diff(SERVICE_SID, sid, {}, fetched[sid], detected)
            await store.commit_poll(SERVICE_SID, sid, fetched=first.known_after, events=[], now=1)

        # The diff's full path (each sid's latest record, fingerprints, events), which a
        # changed poll takes: what every poll cost before the unchanged shortcut.
        async def full_path(sid: str, listed: list[Interaction], *, hand_known: bool) -> None:
            known = await store.known(sid)
            found = _changes(SERVICE_SID, sid, known, listed, detected, None, True)
            await store.commit_poll(
                SERVICE_SID,
                sid,
                fetched=found.known_after,
                events=[(e, SINKS) for e in found.events],
                now=2,
                known=known if hand_known else None,
            )

        async def read_twice(sid: str, listed: list[Interaction]) -> None:
            await full_path(sid, listed, hand_known=False)

        async def read_once(sid: str, listed: list[Interaction]) -> None:
            await full_path(sid, listed, hand_known=True)

        async def shortcut(sid: str, listed: list[Interaction]) -> None:
            if not diff(SERVICE_SID, sid, await store.known(sid), listed, detected).unchanged:
                raise AssertionError("the bench's sessions are unchanged")
            await store.commit_unchanged(SERVICE_SID, sid, now=2)

        paths = {"known set read twice": read_twice, "read once": read_once}
        paths["unchanged shortcut"] = shortcut
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, path in paths.items():
                started = time.process_time()
                for sid in sids:
                    await path(sid, fetched[sid])
                spent = time.process_time() - started
                best[name] = min(best.get(name, spent), spent)
        await store.close()
    print()
    print(f"state side of {sessions} unchanged polls (cpu s, lowest of {rounds} rounds):")
    print(table([[name, round(spent, 3)] for name, spent in best.items()], ["path", "cpu s"]))
    twice = best["known set read twice"]
    print(ratio_line("unchanged shortcut/read twice cpu", best["unchanged shortcut"] / twice))


if __name__ == "__main__":
    main()
