"""``poller events list`` and ``poller events replay``: the history, read and resent.

Both open the state as the outbox commands do (SQLite: beside the daemon that holds the file;
PostgreSQL: without a fence), so they work while the daemon runs; a replay only adds pending
rows to the outbox, which the running daemon delivers as any other (retries, dead letters,
per-session order), under the events' own ids.

    list:   select (HistoryQuery) -> a table, or JSON lines; never a message body
    replay: select -> the events the sink takes (its events and filter; ids: as named)
            -> History.replay -> "queued N, skipped M"

Usage errors (an unknown sink, an id the state does not keep, a bad duration) are one line and
exit 2 (:class:`UsageError`); nothing is queued then.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from poller.errors import PollerError

if TYPE_CHECKING:
    from poller.config import Config
    from poller.config.models import SinkConfig
    from poller.state.base import StateStore
    from poller.state.views import HistoryQuery, KeptEvent, SinkOutcome

_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TABLE_LIMIT = 100  # the table's default: the latest 100 (JSON lines: all)


class UsageError(PollerError):
    """A command line the state or the config cannot satisfy: one line, exit 2."""


def duration(text: str) -> float:
    """Parse ``90s``, ``15m``, ``2h``, ``7d`` into seconds (argparse's ``type=``)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: expected a positive number and a unit, "
            "like 90s, 15m, 2h or 7d"
        )
    return float(int(match[1]) * _UNIT_SECONDS[match[2]])


def _limit(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def add_events_parser(
    sub: argparse._SubParsersAction[Any],
    add_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``events list`` and ``events replay`` to the CLI's subcommands."""
    events = sub.add_parser("events", help="list kept events and their attempts, replay them")
    events_sub = events.add_subparsers(
        dest="events_command", required=True, parser_class=type(events)
    )
    p = events_sub.add_parser(
        "list", help="kept events, latest last: a table, or JSON lines (never a message body)"
    )
    add_config(p)
    p.add_argument("--session", metavar="KC", help="only this session's events")
    p.add_argument("--sink", metavar="NAME", help="only events that went to this sink")
    p.add_argument("--type", metavar="T", help="only this event type (interaction.created...)")
    p.add_argument(
        "--since", metavar="DURATION", type=duration, help="detected within: 90s, 15m, 2h, 7d"
    )
    p.add_argument("--limit", metavar="N", type=_limit, help=f"the latest N (table: {TABLE_LIMIT})")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p = events_sub.add_parser(
        "replay", help="queue kept events again for one sink, under their own ids, in order"
    )
    add_config(p)
    p.add_argument("--sink", metavar="NAME", required=True, help="the sink to send them to")
    p.add_argument(
        "--since", metavar="DURATION", type=duration, help="events detected within: 2h, 1d"
    )
    p.add_argument("--session", metavar="KC", help="every kept event of this session")
    p.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="these events")


async def run_events(args: argparse.Namespace, config: Config, out: TextIO | None = None) -> int:
    """Run ``events list`` or ``events replay`` (printing to ``out``, stdout by default)."""
    from poller.state.open import open_store

    out = out if out is not None else sys.stdout

    if args.events_command == "replay":
        sink = _sink(config, args.sink)  # before opening anything: a typo costs nothing
        query = _replay_query(args)
        async with await open_store(config.state, shared=True) as store:
            return await _replay(store, sink, query, out)
    async with await open_store(config.state, shared=True) as store:
        return await _list(store, args, out)


def _sink(config: Config, name: str) -> SinkConfig:
    for sink in config.sinks:
        if sink.name == name:
            return sink
    known = ", ".join(s.name for s in config.sinks)
    raise UsageError(f"--sink {name!r}: no sink of that name in the config (its sinks: {known})")


def _replay_query(args: argparse.Namespace) -> HistoryQuery:
    from poller.state.views import HistoryQuery

    chosen = [args.since is not None, args.session is not None, bool(args.event_ids)]
    if sum(chosen) != 1:
        raise UsageError("events replay: give exactly one of --since, --session or event ids")
    if args.event_ids:
        return HistoryQuery(event_ids=tuple(dict.fromkeys(args.event_ids)))
    since = None if args.since is None else time.time() - args.since
    return HistoryQuery(session_sid=args.session, since=since)


async def _replay(store: StateStore, sink: SinkConfig, query: HistoryQuery, out: TextIO) -> int:
    from poller.detect.routing import accepts

    kept = await store.history(query)
    if query.event_ids:
        found = {k.event.id for k in kept}
        missing = [i for i in query.event_ids if i not in found]
        if missing:
            raise UsageError(
                f"event {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} is not "
                "kept in the state (never detected, or done over delivery.history_seconds ago)"
                "; nothing was queued"
            )
        chosen = kept  # named one by one: queued whatever the sink's filter says
    else:
        chosen = [k for k in kept if accepts(sink, k.event)]
    queued = await store.replay(sink.name, [k.event.id for k in chosen], now=time.time())
    skipped = len(chosen) - len(queued)
    line = f"queued {len(queued)} events for sink {sink.name}; skipped {skipped} already queued"
    if len(chosen) < len(kept):
        line += f"; {len(kept) - len(chosen)} selected are not for it (its events/filter)"
    print(line, file=out)
    return 0


async def _list(store: StateStore, args: argparse.Namespace, out: TextIO) -> int:
    from poller.state.views import HistoryQuery

    limit = args.limit if args.limit is not None or args.json else TABLE_LIMIT
    since = None if args.since is None else time.time() - args.since
    query = HistoryQuery(
        session_sid=args.session, sink=args.sink, type=args.type, since=since, limit=limit
    )
    kept = await store.history(query)
    if args.json:
        for item in kept:
            print(json.dumps(event_row(item), sort_keys=True), file=out)
    else:
        print_table(kept, out)
        if args.limit is None and len(kept) == TABLE_LIMIT:
            print(f"(the latest {TABLE_LIMIT}: --limit N or --json for more)", file=out)
    return 0


def event_row(kept: KeptEvent) -> dict[str, object]:
    """One kept event as a JSON object: ids, times, where it stands per sink; never its data."""
    event = kept.event
    return {
        "id": event.id,
        "type": event.type.value,
        "detected_at": kept.detected_at,
        "done_at": kept.done_at,
        "service_sid": event.service_sid,
        "session_sid": event.session_sid,
        "interaction_sid": event.interaction_sid or None,  # None: a session event
        "sinks": [outcome.to_json() for outcome in kept.sinks],
    }


_HEADER = ("DETECTED (UTC)", "EVENT", "TYPE", "SESSION", "SINKS")


def print_table(kept: Sequence[KeptEvent], out: TextIO) -> None:
    """Print the kept events as aligned columns, oldest first."""
    rows = [_HEADER, *(_table_row(k) for k in kept)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
    if not kept:
        print("(no kept event matches)", file=out)


def _table_row(kept: KeptEvent) -> tuple[str, str, str, str, str]:
    when = datetime.fromtimestamp(kept.detected_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    event = kept.event
    sinks = ", ".join(_sink_cell(outcome) for outcome in kept.sinks)
    return (when, event.id, event.type.value, event.session_sid, sinks or "-")


def _sink_cell(outcome: SinkOutcome) -> str:
    """``ops:delivered``, ``ops:pending HTTP 503 x3``: the state, the last error, the tries."""
    cell = f"{outcome.sink}:{outcome.state}"
    if outcome.last_error:
        cell += f" {outcome.last_error}"
    elif outcome.last_status is not None and outcome.state != "delivered":
        cell += f" {outcome.last_status}"
    if outcome.attempts > 1:
        cell += f" x{outcome.attempts}"
    return cell
