"""The command line's arguments: each command's parser, built only for the command named.

``build_parser`` is what ``poller.cli`` parses with; ``poller.cli`` runs what it parsed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import NoReturn

from poller import __version__

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"poller: error: {message} (see --help)\n")


def _add_config(p: argparse.ArgumentParser) -> None:
    # None when not given: poller.cli, which reads the environment, then takes $POLLER_CONFIG.
    p.add_argument("-c", "--config", help="path of the YAML config (default: $POLLER_CONFIG)")


_Commands = argparse._SubParsersAction  # the subcommands' action: add_parser() on it


def _add_run(sub: _Commands[_Parser]) -> None:
    _add_config(sub.add_parser("run", help="run the daemon in the foreground"))


def _add_once(sub: _Commands[_Parser]) -> None:
    _add_config(sub.add_parser("once", help="poll every watched session once, deliver, exit"))


def _add_check_config(sub: _Commands[_Parser]) -> None:
    _add_config(sub.add_parser("check-config", help="validate the config without calling anyone"))


def _add_state(sub: _Commands[_Parser]) -> None:
    state = sub.add_parser("state", help="inspect the state, or migrate it to PostgreSQL")
    state_sub = state.add_subparsers(dest="state_command", required=True, parser_class=_Parser)
    p = state_sub.add_parser("show", help="JSON summary of the state")
    _add_config(p)
    p = state_sub.add_parser(
        "migrate", help="copy the configured SQLite state into an empty PostgreSQL database"
    )
    _add_config(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--to",
        metavar="URL",
        help="postgresql://user@host:port/database (a password here is visible to local "
        "users in the process list: prefer --to-file)",
    )
    target.add_argument("--to-file", metavar="PATH", help="a file holding that URL")


def _add_outbox(sub: _Commands[_Parser]) -> None:
    outbox = sub.add_parser(
        "outbox", help="inspect and manage dead-lettered deliveries and disabled sinks"
    )
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True, parser_class=_Parser)
    for name, text in (
        ("list", "list disabled sinks, retrying sinks and dead letters as JSON lines"),
        ("retry", "requeue dead-lettered deliveries; without ids, resume disabled sinks too"),
        ("purge", "drop dead-lettered deliveries"),
    ):
        p = outbox_sub.add_parser(name, help=text)
        _add_config(p)
        p.add_argument("--sink", help="only this sink's deliveries")
        if name != "list":
            p.add_argument("ids", nargs="*", type=int, help="delivery ids (default: all)")


def _add_events(sub: _Commands[_Parser]) -> None:
    from poller.delivery.events_cli import add_events_parser

    add_events_parser(sub, _add_config)  # events list / replay


def _add_test_sink(sub: _Commands[_Parser]) -> None:
    p = sub.add_parser("test-sink", help="send one sample event to a sink and show the answer")
    p.add_argument("name", help="the sink's name in the config")
    _add_config(p)


def _add_demo(sub: _Commands[_Parser]) -> None:
    p = sub.add_parser("demo", help="simulator + local receiver + daemon, events printed")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--state-dir", default=None, help="where to keep the demo's files (temp dir)")


def _add_simulate(sub: _Commands[_Parser]) -> None:
    p = sub.add_parser("simulate", help="run the Twilio Proxy simulator alone")
    p.add_argument("--port", type=int, default=8099, help="port on 127.0.0.1 (default 8099)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--sessions", type=int, default=3, help="sessions to create at start")


# Every command's arguments, in the order --help lists them.
_ARGUMENTS: dict[str, Callable[[_Commands[_Parser]], None]] = {
    "run": _add_run,
    "once": _add_once,
    "check-config": _add_check_config,
    "state": _add_state,
    "outbox": _add_outbox,
    "events": _add_events,
    "test-sink": _add_test_sink,
    "demo": _add_demo,
    "simulate": _add_simulate,
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Return the command line's parser: for ``argv``'s command alone when its first word names one.

    argparse builds every subcommand's parser before it parses (16 here, about 2 ms, gettext
    looking up a translation for each help line), a cost every ``poller once`` run from cron
    would pay. Parsing comes out the same: all of a command's arguments follow its name, and
    any other first word (``--help``, ``--version``, a typo) gets the whole parser.
    """
    parser = _Parser(
        prog="poller",
        description="Poll Twilio Proxy Interactions; deliver every change to webhooks and Slack.",
    )
    parser.add_argument("--version", action="version", version=f"poller {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    named = argv[0] if argv and argv[0] in _ARGUMENTS else None
    for command, add in _ARGUMENTS.items():
        if named in (None, command):
            add(sub)
    return parser
