"""The command line's parser: built for the one command named, it parses as the whole one does."""

from __future__ import annotations

import argparse

import pytest

from poller import cli
from poller.arguments import EXIT_USAGE, build_parser
from poller.errors import ConfigError

ARGVS = [
    ["run", "-c", "a.yaml"],
    ["once", "--config", "a.yaml"],
    ["once"],
    ["check-config", "-c", "a.yaml"],
    ["state", "show", "-c", "a.yaml"],
    ["state", "migrate", "-c", "a.yaml", "--to-file", "url.txt"],
    ["outbox", "list", "--sink", "hook"],
    ["outbox", "retry", "-c", "a.yaml", "3", "4"],
    ["outbox", "purge", "--sink", "hook", "7"],
    ["events", "list", "--since", "2h", "--limit", "5", "--json"],
    ["events", "replay", "--sink", "hook", "--session", "KC1"],
    ["test-sink", "hook", "-c", "a.yaml"],
    ["demo", "--duration", "5", "--state-dir", "/tmp/d"],
    ["simulate", "--port", "9000", "--sessions", "7"],
]


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(subparsers.choices)


@pytest.mark.parametrize("argv", ARGVS, ids=lambda argv: " ".join(argv[:2]))
def test_a_command_parses_the_same_with_its_own_parser_as_with_the_whole_one(
    argv: list[str],
) -> None:
    narrowed = build_parser(argv)
    assert _commands(narrowed) == [argv[0]]
    assert vars(narrowed.parse_args(argv)) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["bogus", "x"], ["-c", "a"]])
def test_anything_but_a_command_first_gets_every_command(argv: list[str]) -> None:
    assert _commands(build_parser(argv)) == list(cli.COMMANDS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["once", "--bogus"], "unrecognized arguments: --bogus"),
        (["outbox", "retry", "x"], "invalid int value: 'x'"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_a_bad_argument_is_refused_with_the_same_line_either_way(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    errors = []
    for parser in (build_parser(argv), build_parser()):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == EXIT_USAGE
        errors.append(capsys.readouterr().err)
    assert message in errors[0]
    assert errors[0] == errors[1]


def test_the_config_comes_from_c_else_from_poller_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLER_CONFIG", "from-env.yaml")
    assert cli._require_config(build_parser().parse_args(["once"])) == "from-env.yaml"
    given = build_parser().parse_args(["once", "-c", "given.yaml"])
    assert cli._require_config(given) == "given.yaml"
    monkeypatch.delenv("POLLER_CONFIG")
    with pytest.raises(ConfigError, match="no config given"):
        cli._require_config(build_parser().parse_args(["once"]))
