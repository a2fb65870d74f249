"""`poller events list` and `poller events replay`: the CLI on a SQLite state seeded in the past.

In process (``cli.main``), on a real state file; the end-to-end test beside a running daemon is
tests/e2e/test_replay_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller import cli
from poller.events import EventType
from poller.state.sqlite.store import SqliteStore
from tests.history_seed import Past, seed_delivered
from tests.sink_contract_cases import make_event

HOUR = 3600.0
SERVICE = "KS" + "a" * 32
ONE, TWO = "KC" + "1" * 32, "KC" + "2" * 32
BODY = "the body that is never listed"


def _write_config(folder: Path, sinks: list[dict[str, Any]] | None = None) -> Path:
    config = {
        "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
        "state": {"path": str(folder / "state.db")},
        "watch": [{"service_sid": SERVICE, "all_sessions": True}],
        "sinks": sinks
        or [
            {"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/ops"},
            {
                "name": "failures",
                "type": "webhook",
                "url": "http://127.0.0.1:9/failures",
                "filter": {"outbound_resource_status": ["failed"]},
            },
        ],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, list[Past]]:
    """A state with five events over two days: ONE at -40h, -30h, -20h; TWO at -10h, -1h."""
    now = time.time()
    hours = [(ONE, 40), (ONE, 30), (ONE, 20), (TWO, 10), (TWO, 1)]
    past = [
        Past(make_event(session_sid=session, body=BODY), now - ago * HOUR) for session, ago in hours
    ]
    past[3] = replace(past[3], event=replace(past[3].event, type=EventType.UPDATED))

    async def seed() -> None:
        async with SqliteStore.open(tmp_path / "state.db") as store:
            await seed_delivered(store, past)

    asyncio.run(seed())
    return _write_config(tmp_path), past


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _pending_ids(folder: Path, sink: str) -> list[str]:
    async def read() -> list[str]:
        async with SqliteStore.open(folder / "state.db") as store:
            return [d.event.id for d in await store.backlog(sink, None, 1000)]

    return asyncio.run(read())


def test_list_prints_a_table_of_every_kept_event_oldest_first_without_bodies(
    seeded: tuple[Path, list[Past]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, past = seeded
    code, out, _ = _run(capsys, "events", "list", "-c", str(config))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["DETECTED", "(UTC)", "EVENT", "TYPE"]
    assert [row.split()[2] for row in rows] == [p.event.id for p in past]
    assert rows[0].split()[-1] == "ops:delivered"
    assert "interaction.updated" in rows[3]
    assert BODY not in out


def test_list_json_lines_carry_ids_times_and_sinks_and_filter_by_session_since_and_type(
    seeded: tuple[Path, list[Past]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, past = seeded
    _, out, _ = _run(capsys, "events", "list", "-c", str(config), "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == [p.event.id for p in past]
    first = lines[0]
    assert set(first) == {
        "id", "type", "detected_at", "done_at", "service_sid", "session_sid",
        "interaction_sid", "sinks",
    }  # fmt: skip
    assert first["detected_at"] == pytest.approx(past[0].at)
    assert first["done_at"] == pytest.approx(past[0].at + 0.5)
    (ops,) = first["sinks"]
    assert (ops["sink"], ops["state"], ops["attempts"]) == ("ops", "delivered", 1)
    assert BODY not in out

    def ids(*filters: str) -> list[str]:
        _, listed, _ = _run(capsys, "events", "list", "-c", str(config), "--json", *filters)
        return [json.loads(line)["id"] for line in listed.splitlines()]

    assert ids("--session", TWO) == [past[3].event.id, past[4].event.id]
    assert ids("--since", "1d") == [p.event.id for p in past[2:]]
    assert ids("--type", "interaction.updated") == [past[3].event.id]
    assert ids("--limit", "2") == [past[3].event.id, past[4].event.id]  # the latest, in order
    assert ids("--sink", "failures") == []


def test_replay_since_a_day_queues_the_events_of_that_day_in_their_order(
    seeded: tuple[Path, list[Past]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, past = seeded
    code, out, _ = _run(
        capsys, "events", "replay", "-c", str(config), "--sink", "ops", "--since", "1d"
    )
    assert code == 0
    assert out == "queued 3 events for sink ops; skipped 0 already queued\n"
    assert _pending_ids(config.parent, "ops") == [p.event.id for p in past[2:]]

    _, again, _ = _run(
        capsys, "events", "replay", "-c", str(config), "--sink", "ops", "--since", "2d"
    )
    assert again == "queued 2 events for sink ops; skipped 3 already queued\n"
    # Behind what the queues already hold: a replay never reorders what is pending.
    assert _pending_ids(config.parent, "ops") == [p.event.id for p in past[2:] + past[:2]]


def test_replay_by_session_and_by_ids_in_original_order_whatever_the_order_given(
    seeded: tuple[Path, list[Past]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, past = seeded
    code, out, _ = _run(
        capsys, "events", "replay", "-c", str(config), "--sink", "ops", "--session", TWO
    )
    assert (code, out) == (0, "queued 2 events for sink ops; skipped 0 already queued\n")
    ids = [past[2].event.id, past[0].event.id]
    code, out, _ = _run(capsys, "events", "replay", "-c", str(config), "--sink", "ops", *ids)
    assert (code, out) == (0, "queued 2 events for sink ops; skipped 0 already queued\n")
    pending = _pending_ids(config.parent, "ops")
    assert pending[:2] == [past[3].event.id, past[4].event.id]  # each session's queue in order
    assert sorted(pending[2:]) == sorted(ids)

    async def order() -> list[str]:
        async with SqliteStore.open(config.parent / "state.db") as store:
            return [
                d.event.id
                for d in await store.backlog("ops", None, 10)
                if d.event.session_sid == ONE
            ]

    assert asyncio.run(order()) == [past[0].event.id, past[2].event.id]


def test_replay_since_skips_what_the_sinks_filter_would_not_take(
    seeded: tuple[Path, list[Past]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = seeded
    code, out, _ = _run(
        capsys, "events", "replay", "-c", str(config), "--sink", "failures", "--since", "7d"
    )
    assert code == 0
    assert out == (
        "queued 0 events for sink failures; skipped 0 already queued; "
        "5 selected are not for it (its events/filter)\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sink", "gone", "--since", "1d"], "--sink 'gone': no sink of that name in the config"),
        (["--sink", "ops", "evt_" + "f" * 32], "event evt_" + "f" * 32 + " is not kept"),
        (["--sink", "ops", "--since", "90x"], "'90x' is not a duration"),
        (["--sink", "ops", "--since", "1d", "--session", ONE], "exactly one of --since"),
        (["--sink", "ops"], "exactly one of --since"),
    ],
)
def test_replay_refuses_with_one_line_and_exit_2_and_queues_nothing(
    seeded: tuple[Path, list[Past]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    config, past = seeded
    with_a_kept_id = [*argv, past[0].event.id] if argv[-1].startswith("evt_") else argv
    try:
        code, out, err = _run(capsys, "events", "replay", "-c", str(config), *with_a_kept_id)
    except SystemExit as exit_:  # argparse's own refusal (a bad duration)
        code, (out, err) = int(str(exit_.code)), capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and message in err
    assert _pending_ids(config.parent, "ops") == []


def test_help_of_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("list", "replay"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["events", command, "--help"])
        assert exit_.value.code == 0
        assert "--since DURATION" in capsys.readouterr().out
