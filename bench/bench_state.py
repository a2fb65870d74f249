"""State file size and commit time per poll: 10,000 sessions x 100 interactions.

A poll ends with ``known`` (the session's known set, for the diff) and
``commit_poll`` (one transaction: the known set becomes what was fetched, plus the events
and their outbox rows). Baseline: the commit of an unchanged session; then sessions where 1,
10 and 100 interactions changed (each change one event routed to one sink). The same unchanged
commit on a store ten times smaller shows whether the cost follows what is stored (ratio ~10)
or what changed (ratio ~1).

    python bench/bench_state.py [--quick] [--sessions N] [--interactions N] [--sample N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, mean, percentile, ratio_line, table

from poller.events import Event, EventType, event_id
from poller.observe.logs import configure_logging
from poller.state.sqlite.store import SqliteStore
from poller.twilio.records import Fingerprint

SERVICE = "KS" + "0" * 32
TEMPLATE: dict[str, Any] = json.loads(
    (ROOT / "tests" / "fixtures" / "interaction_fetch.json").read_text()
)
CHANGES = (1, 10, 100)
WARM_UP = 20  # polls measured and discarded first (caches, first WAL growth)


def session_sid(n: int) -> str:
    return f"KC{n:032x}"


def interaction_sid(session: int, n: int) -> str:
    return f"KI{session:016x}{n:016x}"


def known_set(session: int, interactions: int, stamp: str) -> dict[str, Fingerprint]:
    return {
        interaction_sid(session, n): Fingerprint(stamp, "delivered", "delivered")
        for n in range(interactions)
    }


async def populate(store: SqliteStore, sessions: int, interactions: int, now: float) -> float:
    """Baseline every session with its known set; return the seconds it took."""
    started = time.perf_counter()
    for s in range(sessions):
        await store.commit_poll(
            SERVICE,
            session_sid(s),
            fetched=known_set(s, interactions, "2026-01-01T00:00:00Z"),
            events=[],
            now=now,
        )
    return time.perf_counter() - started


def _event(session: int, sid: str, old: Fingerprint, new: Fingerprint) -> Event:
    record = {
        **TEMPLATE,
        "sid": sid,
        "session_sid": session_sid(session),
        "service_sid": SERVICE,
        "date_updated": new.date_updated,
        "inbound_resource_status": new.inbound_resource_status,
        "outbound_resource_status": new.outbound_resource_status,
    }
    return Event(
        id=event_id(EventType.UPDATED, sid, old, new),
        type=EventType.UPDATED,
        service_sid=SERVICE,
        session_sid=session_sid(session),
        interaction_sid=sid,
        interaction=record,
        timestamp=new.date_updated or "",
        changes={"date_updated": (old.date_updated, new.date_updated)},
        sort_key=f"{TEMPLATE['date_created']}{sid}",
    )


async def measure(
    store: SqliteStore, sample: Sequence[int], interactions: int, changed: int, now: float
) -> tuple[list[float], list[float]]:
    """Poll-end cost per session of ``sample``: (commit seconds, known + commit seconds)."""
    commits: list[float] = []
    totals: list[float] = []
    for s in sample:
        old = known_set(s, interactions, "2026-01-01T00:00:00Z")
        fetched = dict(old)
        events = []
        for n in range(changed):
            sid = interaction_sid(s, n)
            fetched[sid] = Fingerprint("2026-01-02T00:00:00Z", "delivered", "read")
            events.append((_event(s, sid, old[sid], fetched[sid]), ["bench"]))
        started = time.perf_counter()
        await store.known(session_sid(s))
        middle = time.perf_counter()
        await store.commit_poll(SERVICE, session_sid(s), fetched=fetched, events=events, now=now)
        ended = time.perf_counter()
        commits.append(ended - middle)
        totals.append(ended - started)
    return commits, totals


def file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def run(sessions: int, small_sessions: int, interactions: int, sample: int) -> None:
    print(
        f"bench_state: {sessions:,} sessions x {interactions} interactions "
        f"(and {small_sessions:,} x {interactions} for scale), {sample} polls per row"
    )
    print(f"machine: {machine()}")
    configure_logging("console", "warning")
    now = time.time()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        small_path = Path(tmp) / "small.db"
        async with SqliteStore.open(small_path) as small:
            await populate(small, small_sessions, interactions, now)
            await measure(small, range(min(WARM_UP, small_sessions)), interactions, 0, now)
            small_commit, small_total = await measure(
                small, range(min(sample, small_sessions)), interactions, 0, now
            )
        rows.append(_row(f"unchanged, {small_sessions:,} sessions", small_commit, small_total))

        path = Path(tmp) / "state.db"
        async with SqliteStore.open(path) as store:
            took = await populate(store, sessions, interactions, now)
        size = file_size(path)
        print(
            f"populated {sessions * interactions:,} interactions in {took:.1f}s; state file "
            f"{size / 1e6:.1f} MB closed ({size / (sessions * interactions):.0f} bytes per "
            "interaction)"
        )
        results: dict[int, tuple[list[float], list[float]]] = {}
        async with SqliteStore.open(path) as store:
            await measure(store, range(sessions - WARM_UP, sessions), interactions, 0, now)
            for index, changed in enumerate((0, *CHANGES)):
                # Each row polls sessions of its own, all starting from the same known set.
                first = index * sample
                chosen = range(first, min(first + sample, sessions))
                results[changed] = await measure(store, chosen, interactions, changed, now)
        # Sizes are taken closed: the WAL checkpointed into the file, as after a clean stop.
        size_after = file_size(path)
        for changed, (commit, total) in results.items():
            label = "unchanged (baseline)" if changed == 0 else f"{changed} changed"
            rows.append(_row(f"{label}, {sessions:,} sessions", commit, total))

    print()
    print(
        table(
            rows,
            ["poll", "commit mean ms", "commit p50 ms", "commit p99 ms", "known+commit mean ms"],
        )
    )
    print(f"state file after the changed polls: {size_after / 1e6:.1f} MB")
    print()
    base = mean(results[0][0])
    for changed in CHANGES:
        print(ratio_line(f"{changed} changed/unchanged commit", mean(results[changed][0]) / base))
    print(
        ratio_line(
            f"unchanged commit p50 {sessions:,}/{small_sessions:,} sessions",
            percentile(results[0][0], 0.5) / percentile(small_commit, 0.5),
            "~1: cost follows what changed, not what is stored",
        )
    )


def _row(label: str, commit: list[float], total: list[float]) -> list[object]:
    return [
        label,
        mean(commit) * 1000,
        percentile(commit, 0.5) * 1000,
        percentile(commit, 0.99) * 1000,
        mean(total) * 1000,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 sessions: a smoke run")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--interactions", type=int, default=100)
    parser.add_argument("--sample", type=int, default=None, help="polls measured per row")
    args = parser.parse_args()
    sessions = args.sessions or (1000 if args.quick else 10_000)
    sample = args.sample or (100 if args.quick else 500)
    sample = min(sample, sessions // (len(CHANGES) + 1))
    asyncio.run(run(sessions, max(1, sessions // 10), args.interactions, sample))


if __name__ == "__main__":
    main()
