"""The status page and ``/api/status`` on a big state: 5,000 sessions, 100,000 kept events.

A SQLite state seeded through the store API (Twilio's full interaction records; every event
delivered and kept with its attempt, a few pending, a few dead, one sink disabled), the health
server with the status page on it,
then ``--requests`` GETs of ``/healthz`` (the baseline: the same server, the same client, no
state read), ``/api/status`` and ``/``, in turn. Prints p50/p99 in ms and the ratios to the
baseline. Goal: ``/`` and ``/api/status`` within 50 ms (p99).

    python bench/bench_status.py [--quick] [--sessions N] [--events N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import machine, percentile, ratio_line, table

from poller.config import Config, parse_config
from poller.events import Event, EventType, event_id
from poller.observe.cycles import CycleLog
from poller.observe.health import HealthServer, HealthState
from poller.observe.logs import configure_logging
from poller.observe.status import StatusSource
from poller.state.history import Attempt
from poller.state.sqlite.store import SqliteStore
from poller.twilio.records import Fingerprint

SERVICE = "KS" + "0" * 32
ROOT = Path(__file__).resolve().parents[1]
# Twilio's own fixture: an interaction with every field Twilio fills (its data, its URLs).
TEMPLATE: dict[str, Any] = json.loads(
    (ROOT / "tests" / "fixtures" / "interaction_fetch.json").read_text()
)
SINKS = ("ops", "audit", "chat")
GOAL_MS = 50.0


def session_sid(n: int) -> str:
    return f"KC{n:032x}"


def make_event(session: int, n: int) -> Event:
    sid = f"KI{session:016x}{n:016x}"
    fp = Fingerprint("2026-01-01T00:00:00Z", "received", "delivered")
    return Event(
        id=event_id(EventType.CREATED, sid, None, fp),
        type=EventType.CREATED,
        service_sid=SERVICE,
        session_sid=session_sid(session),
        interaction_sid=sid,
        interaction={
            **TEMPLATE,
            "sid": sid,
            "session_sid": session_sid(session),
            "service_sid": SERVICE,
            "date_updated": fp.date_updated,
        },
        timestamp=fp.date_updated or "",
        sort_key=f"{fp.date_updated}|{sid}",
    )


def config() -> Config:
    sinks = [
        {"name": name, "type": "webhook", "url": f"http://127.0.0.1:9/{name}"} for name in SINKS
    ]
    return parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "bench"},
            "watch": [{"service_sid": SERVICE, "all_sessions": True}],
            "sinks": sinks,
        },
        {},
    )


async def seed(store: SqliteStore, sessions: int, events: int, now: float) -> None:
    """Baseline every session; spread ``events`` over them, each to one sink, acked and kept."""
    sids = [session_sid(n) for n in range(sessions)]
    await store.begin_watch(SERVICE, sids, now - 86400)
    per_session = max(1, events // sessions)
    for s in range(sessions):
        batch = [make_event(s, n) for n in range(per_session)]
        sink = SINKS[s % 2]  # chat is kept for the pending and dead rows below
        await store.commit_poll(
            SERVICE,
            session_sid(s),
            fetched={e.interaction_sid: Fingerprint(None, None, None) for e in batch},
            events=[(e, [sink]) for e in batch],
            now=now - 3600 + s * 0.5,
        )
        rows = await store.backlog(sink, None, per_session)
        attempts = [Attempt(r.id, now - 3000 + s * 0.5, 0.05, "delivered", 204) for r in rows]
        await store.ack([r.id for r in rows], history=attempts)
    extra = [make_event(sessions + 1, n) for n in range(40)]
    await store.ensure_session(SERVICE, session_sid(sessions + 1), new_traffic=True, now=now)
    await store.commit_poll(
        SERVICE,
        session_sid(sessions + 1),
        fetched={e.interaction_sid: Fingerprint(None, None, None) for e in extra},
        events=[(e, ["chat"]) for e in extra],
        now=now - 60,
    )
    for row in (await store.backlog("chat", None, 20))[:20]:
        failed = Attempt(row.id, now - 30, 0.4, "dead", 400, "HTTP 400")
        await store.dead_letter(row.id, error="HTTP 400", status=400, now=now - 30, attempt=failed)
    await store.record_sink_disabled("audit", status=410, reason="HTTP 410 Gone", now=now - 10)


async def timed(client: httpx.AsyncClient, path: str, requests: int) -> list[float]:
    """Milliseconds of each of ``requests`` GETs of ``path`` (each must answer 200)."""
    took = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = await client.get(path)
        took.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            sys.exit(f"GET {path} answered {answer.status_code}")
    return took


async def run(sessions: int, events: int, requests: int) -> None:
    configure_logging("console", "warning")
    print(f"machine: {machine()}")
    now = time.time()
    with tempfile.TemporaryDirectory() as folder:
        async with SqliteStore.open(Path(folder) / "state.db") as store:
            started = time.perf_counter()
            await seed(store, sessions, events, now)
            kept = await store.kept_events()
            print(
                f"seeded {sessions} sessions, {kept} kept events "
                f"in {time.perf_counter() - started:.1f}s"
            )
            cycles = CycleLog()
            cycles.record(SERVICE, polled=sessions, failed=0, succeeded=True)
            source = StatusSource(store, config, cycles)
            server = HealthServer("127.0.0.1", 0, health=HealthState(), status=source)
            async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
                for path in ("/healthz", "/api/status", "/"):
                    await timed(c, path, 10)  # warm-up: caches, the first connection
                results = {p: await timed(c, p, requests) for p in ("/healthz", "/api/status", "/")}
    report(results)


def report(results: Mapping[str, Sequence[float]]) -> None:
    base = results["/healthz"]
    rows = [
        (path, percentile(ms, 0.5), percentile(ms, 0.99), max(ms)) for path, ms in results.items()
    ]
    print()
    print(table(rows, ("path", "p50 ms", "p99 ms", "max ms")))
    print()
    for path in ("/api/status", "/"):
        ms = results[path]
        p99 = percentile(ms, 0.99)
        print(ratio_line(f"{path} p50/healthz p50", percentile(ms, 0.5) / percentile(base, 0.5)))
        verdict = "within" if p99 <= GOAL_MS else "OVER"
        print(f"{path}: p99 {p99:.1f} ms, {verdict} the goal of {GOAL_MS:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 sessions, 10,000 events")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    sessions = args.sessions or (500 if args.quick else 5000)
    events = args.events or (10_000 if args.quick else 100_000)
    asyncio.run(run(sessions, events, 50 if args.quick else args.requests))


if __name__ == "__main__":
    main()
