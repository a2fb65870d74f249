"""PostgreSQL delivery with the history kept, against the same delivery keeping nothing.

The delivery path of a daemon: polls commit events (``commit_poll``, 10 events each, to two
sinks), then every sink drains its queues (``due(limit=100)`` and one ``ack`` per batch).
``none`` acks without attempts (``history=None``: the events are deleted, as before the
history); ``kept`` acks each batch with one attempt per row (the events stay, done). Each
round runs both on a database of its own, in turn; the lowest time of each is kept. Then,
over what ``kept`` left: one ``history()`` and ``recent_attempts`` read, the bytes kept per
event (``events`` and ``attempts`` with their indexes, after ``VACUUM``, two attempts per
event), and ``prune_history`` of it all.

    python bench/bench_pg_history.py [--url URL] [--quick] [--events N] [--repeat N]

Without ``--url``, a throwaway cluster is made with the machine's initdb/pg_ctl
(``tests/postgres.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, ratio_line, table

sys.path.insert(0, str(ROOT))

import psycopg
from bench_pg_due import database, drop_created, server

from poller.state.history import Attempt
from poller.state.postgres.db import Settings
from poller.state.postgres.store import PostgresStore
from poller.state.views import HistoryQuery
from tests.state.cases import FP, SERVICE, make_event

SINKS = ("hook", "ops")
PER_POLL = 10
SESSIONS = 50


_SIZE = "SELECT pg_total_relation_size('events') + pg_total_relation_size('attempts')"


async def deliver(url: str, events: int, *, keep: bool) -> dict[str, float]:
    """Seconds to commit ``events`` and drain them; to read, the size and to prune (kept)."""
    store = await PostgresStore.open(Settings(url))
    try:
        started = time.perf_counter()
        for poll in range(events // PER_POLL):
            session = f"KC{poll % SESSIONS:032d}"
            batch = [make_event(session, poll * PER_POLL + n) for n in range(PER_POLL)]
            await store.commit_poll(
                SERVICE,
                session,
                fetched={e.interaction_sid: FP for e in batch},
                events=[(e, SINKS) for e in batch],
                now=1.0 + poll,
            )
        for sink in SINKS:
            while rows := await store.due(sink, None, 100):
                history = [Attempt(r.id, 2.0, 0.01, "delivered", 200) for r in rows]
                await store.ack([r.id for r in rows], history=history if keep else None)
        took = {"deliver": time.perf_counter() - started}
        if not keep:
            return took
        started = time.perf_counter()
        await store.history(HistoryQuery(sink="ops", since=1.0, limit=1000))
        await store.recent_attempts("ops", 50)
        took["read"] = time.perf_counter() - started
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM events, attempts")
            size = conn.execute(_SIZE).fetchone()
        took["bytes"] = float(size[0] if size else 0) / events
        started = time.perf_counter()
        assert await store.prune_history(10.0**9, 1.0) == events
        took["prune"] = time.perf_counter() - started
        return took
    finally:
        await store.close()


async def rounds(base: str, events: int, repeat: int) -> dict[str, float]:
    """The lowest of each measure over ``repeat`` rounds (``none``: deliver keeping nothing)."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        none = await deliver(database(base), events, keep=False)
        kept = await deliver(database(base), events, keep=True)
        measured = {"none": none["deliver"], "kept": kept.pop("deliver"), **kept}
        best = {k: min(v, best.get(k, v)) for k, v in measured.items()}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL server to make databases on")
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    events, repeat = (1000, 1) if args.quick else (args.events, args.repeat)
    with server(args.url) as base:
        try:
            best = asyncio.run(rounds(base, events, repeat))
        finally:
            drop_created(base)
    print(machine())
    print(f"{events} events to {len(SINKS)} sinks, lowest of {repeat} rounds (wall s):")
    print(
        table(
            [
                ("deliver, nothing kept", f"{best['none']:.3f}"),
                ("deliver, history kept", f"{best['kept']:.3f}"),
                ("history() + recent_attempts", f"{best['read']:.4f}"),
                ("prune_history (all)", f"{best['prune']:.3f}"),
            ],
            ["step", "seconds"],
        )
    )
    body = len(make_event(f"KC{0:032d}", 0).to_json())
    print(f"kept per event: {best['bytes']:.0f} bytes (its body {body} bytes, 2 attempts)")
    print(ratio_line("kept / nothing kept", best["kept"] / best["none"], "<= 1.20"))


if __name__ == "__main__":
    main()
