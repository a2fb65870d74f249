"""Delivery throughput: 10,000 queued events to a local webhook receiver (its own process).

The events are enqueued the way polls enqueue them (``Store.commit_poll``, routed to one
signed webhook sink), spread over 1,000 sessions (each session's queue is delivered strictly
in order, so concurrency comes from different sessions). Measured: ``Dispatcher.run_once``
until the outbox is empty, every delivery acknowledged in the outbox, and its CPU. Baseline in
the same invocation: a bare httpx loop posting the same bodies, signed the same way, with the
same concurrency and no outbox. The receiver verifies every signature; its CPU is reported to
show whether it, not the sender, was the bottleneck.

    python bench/bench_delivery.py [--quick] [--events N] [--sessions N] [--concurrency N]
        [--sink-transport wire|aiohttp|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import (
    ROOT,
    WEBHOOK_SECRET,
    Lab,
    LabInfo,
    LabOptions,
    machine,
    ratio_line,
    table,
    write_config,
)
from standardwebhooks.webhooks import Webhook

from poller.config import load_config
from poller.delivery.dispatcher import Dispatcher
from poller.delivery.policy import DeliveryPolicy
from poller.events import Event, EventType, event_id
from poller.http.wire import WireTransport
from poller.observe.logs import configure_logging
from poller.sinks import build_sinks
from poller.sinks.webhook import encode_body
from poller.state.sqlite.store import SqliteStore
from poller.twilio.records import Fingerprint

SERVICE = "KS" + "1" * 32
TEMPLATE: dict[str, Any] = json.loads(
    (ROOT / "tests" / "fixtures" / "interaction_fetch.json").read_text()
)


def make_events(events: int, sessions: int) -> list[tuple[str, list[Event]]]:
    """``events`` interaction.created events spread evenly over ``sessions`` sessions."""
    per_session: list[tuple[str, list[Event]]] = []
    for s in range(sessions):
        session = f"KC{s:032x}"
        batch = []
        for n in range(s, events, sessions):
            sid = f"KI{n:032x}"
            stamp = f"2026-11-27T10:{(n // 60) % 60:02d}:{n % 60:02d}Z"
            record = {**TEMPLATE, "sid": sid, "session_sid": session, "service_sid": SERVICE}
            record["date_created"] = record["date_updated"] = stamp
            batch.append(
                Event(
                    id=event_id(EventType.CREATED, sid, None, Fingerprint(stamp, "sent", "sent")),
                    type=EventType.CREATED,
                    service_sid=SERVICE,
                    session_sid=session,
                    interaction_sid=sid,
                    interaction=record,
                    timestamp=stamp,
                    sort_key=f"{stamp}{sid}",
                )
            )
        per_session.append((session, batch))
    return per_session


def sink_transport(kind: str) -> httpx.AsyncBaseTransport | None:
    """The transport injected into the sink: None keeps the sink's own (poller.http.wire)."""
    return None if kind == "wire" else bare_transport(kind)


def bare_transport(kind: str) -> httpx.AsyncBaseTransport:
    """The bare loop's transport: the one the sink uses in this run."""
    if kind == "httpx":
        return httpx.AsyncHTTPTransport()
    if kind == "aiohttp":  # the bench extras: pip install -e '.[bench]'
        from httpx_aiohttp import AiohttpTransport

        transport: httpx.AsyncBaseTransport = AiohttpTransport()
        return transport
    return WireTransport(httpx.Limits(max_connections=100, max_keepalive_connections=20))


async def run_dispatcher(
    store: SqliteStore, config_path: Path, expected: int, kind: str
) -> tuple[float, float, int]:
    """Drain the outbox; return (wall, cpu, delivered)."""
    config = load_config(config_path)
    sinks = build_sinks(config.sinks, store=store, transport=sink_transport(kind))
    dispatcher = Dispatcher(store, sinks, DeliveryPolicy(config.delivery))
    started_wall, started_cpu = time.monotonic(), time.process_time()
    delivered = 0
    try:
        while delivered < expected:
            result = await dispatcher.run_once()
            delivered += result.delivered
            if result.delivered == 0:
                break
    finally:
        for sink in sinks:
            await sink.aclose()
    return time.monotonic() - started_wall, time.process_time() - started_cpu, delivered


async def run_bare(
    url: str, events: list[Event], concurrency: int, kind: str
) -> tuple[float, float, int]:
    """POST every event with httpx, signed, ``concurrency`` at a time; no outbox."""
    signer = Webhook(WEBHOOK_SECRET)
    queue: asyncio.Queue[Event] = asyncio.Queue()
    for event in events:
        queue.put_nowait(event)
    sent = 0
    started_wall, started_cpu = time.monotonic(), time.process_time()
    async with httpx.AsyncClient(timeout=10.0, transport=bare_transport(kind)) as client:

        async def worker() -> None:
            nonlocal sent
            while not queue.empty():
                event = queue.get_nowait()
                body = encode_body(event, include_data=True)
                msg_id = event.id + "-bare"  # the receiver counts distinct ids
                now = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(now),
                    "webhook-signature": signer.sign(
                        msg_id, datetime.fromtimestamp(now, tz=UTC), body.decode()
                    ),
                }
                response = await client.post(url, content=body, headers=headers)
                response.raise_for_status()
                sent += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started_wall, time.process_time() - started_cpu, sent


async def run_outbox(
    path: Path,
    batches: list[tuple[str, list[Event]]],
    config_path: Path,
    expected: int,
    kind: str,
) -> tuple[float, float, int, int]:
    """Enqueue as polls do, then drain; return (wall, cpu, delivered, pending after)."""
    async with SqliteStore.open(path) as store:
        started = time.perf_counter()
        now = time.time()
        for session, batch in batches:
            await store.commit_poll(
                SERVICE,
                session,
                fetched={},
                events=[(event, ["bench"]) for event in batch],
                now=now,
            )
        enqueue = time.perf_counter() - started
        print(f"enqueued {await store.pending_count():,} deliveries in {enqueue:.2f}s")
        wall, cpu, delivered = await run_dispatcher(store, config_path, expected, kind)
        return wall, cpu, delivered, await store.pending_count()


def run(events: int, sessions: int, concurrency: int, kind: str) -> None:
    print(
        f"bench_delivery: {events:,} queued events over {sessions:,} sessions, "
        f"concurrency {concurrency}, to a signature-verifying receiver in its own process, "
        f"{kind} HTTP transport"
    )
    print(f"machine: {machine()}")
    configure_logging("console", "warning")
    batches = make_events(events, sessions)
    flat = [event for _, batch in batches for event in batch]
    rows: list[list[object]] = []
    with (
        Lab(LabOptions(simulator=False, receiver=True)) as lab,
        tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp,
    ):
        receiver = lab.info.receiver_url
        info = LabInfo(account_sid="AC" + "0" * 32, auth_token="x", service_sid=SERVICE)
        info.base_url = "http://127.0.0.1:9"
        config_path, env = write_config(
            Path(tmp),
            info,
            receiver_url=receiver,
            delivery_concurrency=concurrency,
        )
        os.environ.update(env)  # the config names its secrets as ${VARIABLES}

        # Baseline: the bare loop (no outbox).
        cpu_before = lab.call("cpu")["cpu_seconds"]
        bare_wall, bare_cpu, sent = asyncio.run(
            run_bare(f"{receiver}/hooks/bench", flat, concurrency, kind)
        )
        receiver_bare = lab.call("cpu")["cpu_seconds"] - cpu_before
        rows.append(
            [
                "bare httpx loop (baseline)",
                sent,
                bare_wall,
                sent / bare_wall,
                bare_cpu,
                receiver_bare,
            ]
        )

        cpu_before = lab.call("cpu")["cpu_seconds"]
        wall, cpu, delivered, pending = asyncio.run(
            run_outbox(Path(tmp) / "state.db", batches, config_path, len(flat), kind)
        )
        receiver_cpu = lab.call("cpu")["cpu_seconds"] - cpu_before
        rows.append(
            ["Dispatcher.run_once + outbox", delivered, wall, delivered / wall, cpu, receiver_cpu]
        )
        got = lab.call("count_received")["received"]
    print()
    print(table(rows, ["sender", "events", "wall s", "events/s", "sender cpu s", "receiver cpu s"]))
    print(f"receiver accepted {got:,} distinct events; outbox pending after: {pending}")
    if delivered != len(flat) or pending:
        sys.exit(f"not every event was delivered: {delivered} of {len(flat)}, {pending} pending")
    print()
    print(ratio_line("dispatcher/bare events per second", (delivered / wall) / (sent / bare_wall)))
    print(ratio_line("dispatcher/bare cpu per event", (cpu / delivered) / (bare_cpu / sent)))
    print(f"dispatcher throughput: {delivered / wall:.0f} events/s (goal >= 1,000 events/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 events: a smoke run")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4, help="delivery.concurrency")
    parser.add_argument(
        "--sink-transport",
        choices=("wire", "aiohttp", "httpx"),
        default="wire",
        help="wire: the webhook sink as shipped (httpx over poller.http.wire); "
        "aiohttp: httpx-aiohttp injected (the sink's until 2026-12-02); "
        "httpx: httpx's own async transport injected",
    )
    args = parser.parse_args()
    events = args.events or (1000 if args.quick else 10_000)
    run(events, min(args.sessions, events), args.concurrency, args.sink_transport)


if __name__ == "__main__":
    main()
