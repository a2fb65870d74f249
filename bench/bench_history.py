"""What the history costs on disk: bytes per kept event in the SQLite state file.

Events are made the real way: the simulator's interaction records (every field Twilio fills,
message bodies of SMS length), diffed (``poller.detect.diff``) and routed as a poll routes them
(``route_stored``), committed, then acked with one delivered attempt each, as the dispatcher
does with ``delivery.history_seconds`` > 0. The file is vacuumed, the history pruned, the file
vacuumed again: the difference over the number of events is what one kept event (its payload,
its attempt, its rows in the indexes) costs. Twice: sinks at the default (the body kept) and
every sink with ``include_data: false`` (the body stored nowhere).

    python bench/bench_history.py [--quick] [--events N] [--per-session N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, ratio_line, table

T0 = 1_795_000_000.0
SINKS = ("ops", "audit")  # two sinks: one attempt per event and sink
SENTENCE = (
    "hi are you still coming tomorrow at the usual time I will be there by ten please "
    "confirm the address thanks see you soon running late traffic is bad sorry about that"
)


@dataclass(frozen=True)
class _Sink:
    """What routing reads of a sink's config."""

    name: str
    include_data: bool
    events: tuple[str, ...] = ("interaction.created", "interaction.updated")
    filter: None = None


def _body(rng: random.Random) -> str:
    """An SMS-like body: 60 to 160 characters."""
    vocabulary = SENTENCE.split()
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < rng.randint(60, 160):
        words.append(rng.choice(vocabulary))
    return " ".join(words)


def _file_bytes(path: Path) -> int:
    """The file's size once compacted: VACUUM, then the WAL written back into the file."""
    db = sqlite3.connect(path)
    try:
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return path.stat().st_size


def _payload_bytes(path: Path) -> float:
    """The mean length of a stored event's JSON (its payload alone, no page overhead)."""
    db = sqlite3.connect(path)
    try:
        return float(db.execute("SELECT AVG(LENGTH(body)) FROM events").fetchone()[0])
    finally:
        db.close()


async def _measure(
    folder: Path, events: int, per_session: int, include_data: bool
) -> tuple[float, float]:
    """(file bytes, payload bytes) per kept event with sinks of this ``include_data``."""
    from poller.detect.diff import diff
    from poller.detect.routing import route_stored
    from poller.lab.simulator import Simulator
    from poller.state.history import Attempt
    from poller.state.sqlite.store import SqliteStore
    from poller.twilio.records import Interaction

    rng = random.Random(7)
    simulator = Simulator(seed=7)
    service = simulator.add_service()["sid"]
    sinks = [_Sink(name, include_data) for name in SINKS]
    path = folder / f"state-{include_data}.db"
    store = SqliteStore.open(path)
    now = T0
    for _ in range(events // per_session):
        session = simulator.add_session(service)["sid"]
        raws = [
            simulator.add_interaction(service, session, body=_body(rng)) for _ in range(per_session)
        ]
        listed = [record for raw in raws if (record := Interaction.from_api(raw)) is not None]
        found = diff(service, session, {}, listed, "2026-11-27T11:00:00Z")
        routed = [route_stored(sinks, event) for event in found.events]
        now += 1.0
        await store.commit_poll(service, session, fetched=found.known_after, events=routed, now=now)
        for sink in SINKS:
            due = await store.backlog(sink, None, per_session * 2)
            kept = [Attempt(d.id, now, 0.02, "delivered", None, None) for d in due]
            await store.ack([d.id for d in due], history=kept)
    stored = await store.kept_events()
    await store.close()
    payload = _payload_bytes(path)
    with_history = _file_bytes(path)
    store = SqliteStore.open(path)
    pruned = await store.prune_history(now + 10.0, 0.0)
    await store.close()
    without = _file_bytes(path)
    if pruned != stored:
        raise AssertionError(f"pruned {pruned} of {stored} kept events")
    return (with_history - without) / stored, payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 events: a smoke run")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--per-session", type=int, default=20)
    args = parser.parse_args()
    events = args.events or (2000 if args.quick else 20000)
    from poller.observe.logs import configure_logging

    configure_logging("console", "warning", stream=sys.stderr)
    print(f"bench_history: {events} events, {args.per_session} per session, sinks {SINKS}")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        folder = Path(tmp)
        full = asyncio.run(_measure(folder, events, args.per_session, include_data=True))
        bare = asyncio.run(_measure(folder, events, args.per_session, include_data=False))
    print()
    rows = [
        ["default (the body kept)", round(full[0]), round(full[1])],
        ["include_data: false", round(bare[0]), round(bare[1])],
    ]
    print(table(rows, ["sinks", "file bytes per kept event", "payload bytes per event"]))
    print("(file: the growth of the vacuumed file over the events; it moves by whole pages)")
    print(ratio_line("include_data false/default file bytes per kept event", bare[0] / full[0]))
    print(ratio_line("include_data false/default payload bytes per event", bare[1] / full[1]))


if __name__ == "__main__":
    main()
