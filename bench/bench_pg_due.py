"""PostgreSQL ``due()`` behind failing heads: a recursive skip, a plain scan, a heads table.

1,000 (sink, session) queues each hold 50 pending rows behind a head that waits for a retry,
beside 100 healthy queues of 50 rows whose heads are due, over 6 Services. Three ways to find
the due heads, each on a database of its own with the same rows:

- ``skip`` (what ``poller.state.postgres.queues`` does): a recursive skip over the partial
  index, one probe per queue;
- ``plain``: ``DISTINCT ON (session)`` over every pending row of the sink (the baseline);
- ``heads``: a ``queue_heads`` table kept by PL/pgSQL triggers (as SQLite does), read by its
  index; its triggers' cost shows in the writes (enqueue and ack of the same rows).

Prints the median time of one ``due(limit=100)`` (every Service, and a fence of 2 of the 6),
the writes' time with and without the triggers, and ratios against ``plain``.

    python bench/bench_pg_due.py [--url URL] [--quick] [--depth ROWS]

Without ``--url``, a throwaway cluster is made with the machine's initdb/pg_ctl
(``tests/postgres.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, ratio_line, table

sys.path.insert(0, str(ROOT))

import psycopg

from poller.state.postgres import schema
from poller.state.postgres.db import Database, Settings, connect
from poller.state.postgres.fence import Fence
from poller.state.postgres.outbox import PgOutbox
from tests.postgres import Cluster, find_bindir

SERVICES = [f"KS{n:032d}" for n in range(6)]
SINK = "hook"
FAR = 4e9  # a retry far in the future: the failing heads
NOW = 2e9

_ROWS = """
INSERT INTO events (id, service_sid, session_sid, body, type, created_at)
SELECT 'evt_' || q || '_' || n, (%(services)s::text[])[1 + q %% 6], 'KC' || lpad(q::text, 32, '0'),
       %(body)s, 'interaction.created', 1
FROM generate_series(1, %(queues)s) q, generate_series(1, %(depth)s) n;
INSERT INTO deliveries (event_id, sink, service_sid, session_sid, enqueued_at, next_attempt_at)
SELECT e.id, 'hook', e.service_sid, e.session_sid, 1, 1 FROM events e
ORDER BY e.session_sid, split_part(e.id, '_', 3)::int;
"""
_FAIL_HEADS = """
UPDATE deliveries SET next_attempt_at = %(far)s, attempts = 1 WHERE id IN (
    SELECT min(id) FROM deliveries GROUP BY session_sid
    HAVING session_sid <= 'KC' || lpad(%(failing)s::text, 32, '0'))
"""
_PLAIN = """
SELECT d.id, d.sink, e.body, d.attempts, d.enqueued_at, d.next_attempt_at, d.last_error,
       d.last_status, d.dead_at
FROM (SELECT DISTINCT ON (session_sid) * FROM deliveries
      WHERE sink = %(sink)s AND state = 'pending' ORDER BY session_sid, id) d
JOIN events e ON e.id = d.event_id
WHERE d.next_attempt_at <= %(now)s ORDER BY d.id LIMIT 100
"""
_HEADS_TABLE = """
CREATE TABLE queue_heads (
    sink text NOT NULL, service_sid text NOT NULL, session_sid text NOT NULL,
    delivery_id bigint NOT NULL, next_attempt_at double precision NOT NULL,
    PRIMARY KEY (sink, session_sid));
CREATE INDEX queue_heads_in_order ON queue_heads (sink, delivery_id);
CREATE FUNCTION queue_head_recompute() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    -- One queue's changes in turn, each reading what the one before committed.
    PERFORM pg_advisory_xact_lock(hashtext(r.sink || '/' || r.session_sid));
    IF TG_OP = 'INSERT' THEN  -- ids only grow: a queue with a head keeps it
        INSERT INTO queue_heads VALUES (r.sink, r.service_sid, r.session_sid, r.id,
            r.next_attempt_at) ON CONFLICT DO NOTHING;
        RETURN NULL;
    END IF;
    DELETE FROM queue_heads WHERE sink = r.sink AND session_sid = r.session_sid;
    INSERT INTO queue_heads
    SELECT sink, service_sid, session_sid, id, next_attempt_at FROM deliveries
    WHERE sink = r.sink AND service_sid = r.service_sid AND session_sid = r.session_sid
    AND state = 'pending' ORDER BY id LIMIT 1;
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_head AFTER INSERT OR DELETE OR UPDATE OF state, next_attempt_at
ON deliveries FOR EACH ROW EXECUTE FUNCTION queue_head_recompute();
"""
_HEADS_DUE = """
SELECT d.id, d.sink, e.body, d.attempts, d.enqueued_at, d.next_attempt_at, d.last_error,
       d.last_status, d.dead_at
FROM queue_heads h JOIN deliveries d ON d.id = h.delivery_id JOIN events e ON e.id = d.event_id
WHERE h.sink = %(sink)s AND h.next_attempt_at <= %(now)s ORDER BY h.delivery_id LIMIT 100
"""


class Outbox(PgOutbox):
    """The outbox side alone, on a database and an optional fence."""

    def __init__(self, db: Database, fence: Fence | None) -> None:
        self._db = db
        self._fence = fence


@contextmanager
def server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no initdb/pg_ctl here: pass --url postgresql://...")
    cluster = Cluster.create(bindir)
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.remove()


CREATED: list[str] = []  # the databases made, dropped at the end


def database(base: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    CREATED.append(name)
    return base.rpartition("/")[0] + "/" + name


def drop_created(base: str) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        for name in CREATED:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


async def fill(url: str, *, heads_table: bool, queues: int, depth: int, failing: int) -> float:
    """Migrate, (add the heads table,) write the rows; return the seconds the writes took."""
    conn = await connect(Settings(url, statement_timeout_ms=600_000))
    await schema.migrate(conn)
    if heads_table:
        await conn.execute(_HEADS_TABLE.encode())
    params = {"services": SERVICES, "body": body(), "queues": queues, "depth": depth}
    started = time.perf_counter()
    async with conn.transaction(), conn.cursor() as cur:
        for statement in _ROWS.split(";")[:-1]:
            await cur.execute(statement.encode(), {**params, "failing": failing})
        await cur.execute(_FAIL_HEADS.encode(), {"far": FAR, "failing": failing})
    elapsed = time.perf_counter() - started
    await conn.execute(b"VACUUM ANALYZE")
    await conn.close()
    return elapsed


def body() -> str:
    from poller.events import Event, EventType

    return Event(
        id="evt_x",
        type=EventType.CREATED,
        service_sid=SERVICES[0],
        session_sid="KC" + "0" * 32,
        interaction_sid="KI" + "0" * 32,
        interaction={"sid": "KI" + "0" * 32, "data": '{"body": "hi"}'},
        timestamp="2026-11-27T10:00:00Z",
        sort_key="x",
    ).to_json()


async def median_ms(call: Callable[[], Awaitable[object]], runs: int) -> float:
    for _ in range(5):
        await call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def ack_all_due(outbox: Outbox) -> float:
    """Ack the due heads 100 at a time until the healthy queues are empty; return seconds."""
    started = time.perf_counter()
    while batch := await outbox.due(SINK, NOW, 100):
        await outbox.ack([d.id for d in batch])
    return time.perf_counter() - started


async def measure(base: str, quick: bool, depth: int) -> None:
    queues, failing, runs = (200, 190, 50) if quick else (1100, 1000, 200)
    urls = {kind: database(base) for kind in ("skip", "plain", "heads")}
    fills = {
        kind: await fill(url, heads_table=kind == "heads", queues=queues, depth=depth,
                         failing=failing)
        for kind, url in urls.items()
    }  # fmt: skip
    dbs = {kind: await Database.open(Settings(url)) for kind, url in urls.items()}
    fence = Fence("bench")
    for sid in SERVICES[:2]:
        fence.hold(sid, 1, float("inf"))
    every, fenced = Outbox(dbs["skip"], None), Outbox(dbs["skip"], fence)

    async def plain() -> list[object]:
        return list(await dbs["plain"].read(_PLAIN, {"sink": SINK, "now": NOW}))

    async def heads() -> list[object]:
        return list(await dbs["heads"].read(_HEADS_DUE, {"sink": SINK, "now": NOW}))

    expected = queues - failing
    assert len(await every.due(SINK, NOW, 1000)) == expected
    assert len(await plain()) == len(await heads()) == min(100, expected)
    timings = {
        "plain": await median_ms(plain, runs),
        "skip": await median_ms(lambda: every.due(SINK, NOW, 100), runs),
        "skip, fence of 2/6": await median_ms(lambda: fenced.due(SINK, NOW, 100), runs),
        "heads": await median_ms(heads, runs),
    }
    acks = {kind: await ack_all_due(Outbox(dbs[kind], None)) for kind in ("skip", "heads")}
    for db in dbs.values():
        await db.close()
    report(timings, fills, acks, queues=queues, depth=depth, failing=failing)


def report(
    timings: dict[str, float],
    fills: dict[str, float],
    acks: dict[str, float],
    *,
    queues: int,
    depth: int,
    failing: int,
) -> None:
    rows = queues * depth
    print(machine())
    print(f"{queues} queues of {depth} rows, {failing} behind a failing head; {rows} rows")
    print(table([(k, v) for k, v in timings.items()], ["due(limit=100)", "median ms"]))
    print()
    print(
        table(
            [(k, fills[k], acks.get(k, float("nan"))) for k in ("skip", "plain", "heads")],
            ["writes", f"insert {rows} rows s", f"ack {(queues - failing) * depth} rows s"],
        )
    )
    print(ratio_line("due skip vs plain", timings["skip"] / timings["plain"], "< 1"))
    print(ratio_line("due heads table vs plain", timings["heads"] / timings["plain"]))
    print(ratio_line("insert with head triggers vs without", fills["heads"] / fills["skip"]))
    print(ratio_line("ack with head triggers vs without", acks["heads"] / acks["skip"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL server to make the databases on")
    parser.add_argument("--quick", action="store_true", help="200 queues: a smoke run")
    parser.add_argument("--depth", type=int, default=50, help="rows per queue (50)")
    args = parser.parse_args()
    with server(args.url) as base:
        try:
            asyncio.run(measure(base, args.quick, args.depth))
        finally:
            drop_created(base)


if __name__ == "__main__":
    main()
