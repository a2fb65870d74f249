"""The command line: the composition root.

Reads the config and the environment, builds every object, and maps errors to exit codes:
0 success, 1 something failed or is still pending, 2 bad config, bad usage or unusable state.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from poller.arguments import EXIT_USAGE, build_parser
from poller.errors import ConfigError, CredentialsError, PollerError, StateError

if TYPE_CHECKING:
    from poller.config import Config
    from poller.lab.crashpoints import CrashPoints
    from poller.observe.outage import Outage
    from poller.observe.sdnotify import Notifier
    from poller.replicas.base import Ownership
    from poller.state.base import StateStore
    from poller.state.models import DeadLetter, DisabledSink, FailingSink


def _require_config(args: argparse.Namespace) -> str:
    path = args.config if args.config is not None else os.environ.get("POLLER_CONFIG")
    if not path:
        raise ConfigError("no config given: pass -c FILE or set POLLER_CONFIG")
    return str(path)


def _load(args: argparse.Namespace) -> Config:
    from poller.config import load_config

    return load_config(_require_config(args))


def cmd_check_config(args: argparse.Namespace) -> int:
    from poller.config import summarize

    config = _load(args)
    print(summarize(config))
    print("config ok")
    return 0


def _crash_points() -> CrashPoints:
    from poller.lab.crashpoints import CrashPoints

    return CrashPoints(os.environ.get("POLLER_CRASH_AT"))


def cmd_once(args: argparse.Namespace) -> int:
    from poller.observe.logs import configure_logging
    from poller.observe.recording import stop_recording

    stop_recording()  # nothing serves this process's metrics

    config = _load(args)
    configure_logging(config.log.format, config.log.level, stream=sys.stderr)
    return asyncio.run(_once(config, _crash_points()))


async def _once(config: Config, crash: CrashPoints) -> int:
    from poller.once import once_from_config

    store, ownership = await _open_owned(config)
    return await once_from_config(config, store, crash=crash, ownership=ownership)


def _replica() -> str:
    import socket

    from poller.replicas.open import replica_id

    configured = os.environ.get("POLLER_REPLICA_ID")
    return replica_id(configured, hostname=socket.gethostname(), pid=os.getpid())


async def _open_owned(config: Config, outage: Outage | None = None) -> tuple[StateStore, Ownership]:
    """Open the state as this replica writes it (fenced, on PostgreSQL), and its ownership.

    ``outage``: the daemon's, which the lease keeper reports to as well.
    """
    from poller.replicas.open import make_ownership
    from poller.state.open import open_store

    replica = _replica()
    fence = None
    if config.state.backend == "postgres":
        # Imported here: a SQLite poller never loads the PostgreSQL driver.
        from poller.state.postgres.fence import Fence

        fence = Fence(replica)
    store = await open_store(config.state, fence=fence, application_name=f"poller:{replica}")
    try:
        return store, make_ownership(config, store, fence, replica, outage=outage)
    except BaseException:
        await store.close()
        raise


def cmd_run(args: argparse.Namespace) -> int:
    from poller.config import load_config
    from poller.observe.logs import configure_logging
    from poller.observe.sdnotify import Notifier

    path = _require_config(args)
    config = load_config(path)
    configure_logging(config.log.format, config.log.level)
    notifier = Notifier(os.environ.get("NOTIFY_SOCKET"))
    return asyncio.run(_run_daemon(config, path, _crash_points(), notifier))


async def _run_daemon(config: Config, path: str, crash: CrashPoints, notifier: Notifier) -> int:
    """Open the state, run the daemon on it until it stops, close the state."""
    from poller.app import build_app
    from poller.config import load_config
    from poller.daemon import Daemon
    from poller.observe.outage import Outage

    outage = Outage(config.poll.interval_seconds)
    store, ownership = await _open_owned(config, outage)
    try:
        daemon = Daemon(
            config,
            store,
            build=functools.partial(build_app, crash=crash, owns=ownership.owns),
            reload=functools.partial(load_config, path),
            notifier=notifier,
            ownership=ownership,
            outage=outage,
        )
        return await daemon.run()
    finally:
        await store.close()


async def _open_store(args: argparse.Namespace) -> StateStore:
    from poller.state.open import open_store

    return await open_store(_load(args).state, shared=True)


def cmd_state(args: argparse.Namespace) -> int:
    if args.state_command == "migrate":
        return asyncio.run(_migrate_state(args))
    return asyncio.run(_show_state(args))


async def _migrate_state(args: argparse.Namespace) -> int:
    from poller.config.validators import redact_url
    from poller.state.migrate import migrate_sqlite_to_postgres

    config = _load(args)
    if config.state.url is not None:
        raise ConfigError(
            "state migrate copies a SQLite state (state.path), but this config's state is "
            f"already PostgreSQL ({config.state.where})"
        )
    url = _migration_target(args)
    counts = await migrate_sqlite_to_postgres(config.state.path, url)
    print(f"copied {config.state.path} into {redact_url(url)} in one transaction:")
    for table, rows in counts.items():
        print(f"  {table}: {rows}")
    print("next: set state.url (or state.url_file) to that database and start the replicas")
    return 0


def _migration_target(args: argparse.Namespace) -> str:
    """The PostgreSQL URL of ``--to`` or ``--to-file``, checked without ever showing it."""
    from pathlib import Path

    if args.to_file is not None:
        where = f"--to-file {args.to_file}"
        try:
            url = Path(args.to_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "expected UTF-8 text"
            raise ConfigError(f"{where}: cannot read the URL: {reason}") from None
    else:
        where, url = "--to", str(args.to).strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres") or not rest:
        raise ConfigError(f"{where}: expected a postgresql://user@host:port/database URL")
    return url


async def _show_state(args: argparse.Namespace) -> int:
    async with await _open_store(args) as store:
        print(json.dumps((await store.summary()).to_json(), indent=2, sort_keys=True))
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    return asyncio.run(_outbox(args))


async def _outbox(args: argparse.Namespace) -> int:
    import time

    async with await _open_store(args) as store:
        if args.outbox_command == "list":
            pending = await store.counts_by_sink("pending")
            for disabled in await store.disabled_sinks(args.sink):
                print(json.dumps(_disabled_row(disabled, pending), sort_keys=True))
            for failing in await store.failing_sinks(args.sink):
                print(json.dumps(_failing_row(failing, pending), sort_keys=True))
            for dead in await store.dead_letters(args.sink):
                print(json.dumps(_dead_letter_row(dead), sort_keys=True))
        elif args.outbox_command == "retry":
            n = await store.requeue(args.ids or None, sink=args.sink, now=time.time())
            print(f"requeued {n} deliveries")
            # Chosen by ids: only those rows. Otherwise "retry what waits for this sink".
            for resumed in [] if args.ids else await store.clear_sink_disabled(args.sink):
                print(f"resumed sink {resumed.sink} (disabled: {resumed.reason})")
        else:
            n = await store.purge(args.ids or None, sink=args.sink)
            print(f"purged {n} deliveries")
    return 0


_RESUME = (
    "fix the sink (its URL, its credentials), then reload (SIGHUP) or restart the daemon; "
    "once the cause is fixed outside the config, `poller outbox retry --sink {sink}` resumes "
    "it in the running daemon"
)


def _disabled_row(disabled: DisabledSink, pending: dict[str, int]) -> dict[str, object]:
    """One disabled sink as a JSON object: which, since when, why, what waits, how to resume."""
    return {
        "kind": "sink_disabled",
        "sink": disabled.sink,
        "since": disabled.since,
        "last_seen_at": disabled.last_at,
        "last_status": disabled.status,
        "reason": disabled.reason,
        "pending": pending.get(disabled.sink, 0),
        "resume": _RESUME.format(sink=disabled.sink),
    }


def _failing_row(failing: FailingSink, pending: dict[str, int]) -> dict[str, object]:
    """One sink whose deliveries are being retried: how many, how far, the latest reason."""
    return {
        "kind": "sink_retrying",
        "sink": failing.sink,
        "failing": failing.deliveries,
        "pending": pending.get(failing.sink, 0),
        "attempts": failing.attempts,
        "next_attempt_at": failing.next_attempt_at,
        "last_status": failing.last_status,
        "last_error": failing.last_error,
    }


def _dead_letter_row(dead: DeadLetter) -> dict[str, object]:
    """One dead letter as a JSON object: what an operator needs, never the message body."""
    event = dead.event
    return {
        "kind": "dead_letter",
        "id": dead.id,
        "sink": dead.sink,
        "event_id": event.id,
        "type": event.type.value,
        "service_sid": event.service_sid,
        "session_sid": event.session_sid,
        "interaction_sid": event.interaction_sid or None,  # None: a session event
        "attempts": dead.attempts,
        "last_status": dead.last_status,
        "last_error": dead.last_error,
        "enqueued_at": dead.enqueued_at,
        "dead_at": dead.dead_at,
    }


def cmd_events(args: argparse.Namespace) -> int:
    from poller.delivery.events_cli import UsageError, run_events

    try:
        return asyncio.run(run_events(args, _load(args)))
    except UsageError as exc:
        print(f"poller: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_test_sink(args: argparse.Namespace) -> int:
    from poller.lab.testsink import test_sink

    return asyncio.run(test_sink(_load(args), args.name))


def cmd_demo(args: argparse.Namespace) -> int:
    from poller.lab.demo import run_demo

    return run_demo(duration=args.duration, state_dir=args.state_dir)


def cmd_simulate(args: argparse.Namespace) -> int:
    from poller.lab.simulator import main_simulate

    return main_simulate(port=args.port, host=args.host, seed_sessions=args.sessions)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "once": cmd_once,
    "check-config": cmd_check_config,
    "state": cmd_state,
    "outbox": cmd_outbox,
    "events": cmd_events,
    "test-sink": cmd_test_sink,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    # Not poller.observe: its health server would import aiohttp for every command.
    from poller.observe.logs import configure_logging

    # Until a command configures logging from its config: warnings only, never on stdout.
    configure_logging("auto", "warning", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"poller: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StateError as exc:
        print(f"poller: state error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CredentialsError as exc:
        print(f"poller: {exc}", file=sys.stderr)
        return 1
    except PollerError as exc:
        print(f"poller: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `poller state show | head`: the reader left; say nothing more.
        sys.stderr.close()
        return 0
