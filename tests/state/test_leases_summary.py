"""``poller state show`` lists the leases of a PostgreSQL state; a SQLite state prints as before.

The time a lease has left is the database's (``expires_at - now()``), never this host's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
import yaml

from poller.state.models import Lease
from poller.state.postgres import schema
from poller.state.postgres.db import Database, Settings, connect
from poller.state.postgres.store import read_leases
from poller.state.sqlite.store import SqliteStore
from poller.state.views import OutboxSummary, SessionCounts, Summary
from tests.support import run_poller

HELD, EXPIRED, RELEASED, UNTAKEN = ("KS" + c * 32 for c in "1234")


def seed_leases(url: str) -> None:
    """One lease held a minute more, one expired, one released; one Service watched only."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO leases (service_sid, owner, epoch, acquired_at, expires_at) VALUES "
            "(%s, 'pod-a', 7, now(), now() + interval '60 seconds'), "
            "(%s, 'pod-b', 3, now(), now() - interval '5 seconds'), "
            "(%s, NULL, 4, NULL, now())",
            (HELD, EXPIRED, RELEASED),
        )
        conn.execute("INSERT INTO watches VALUES (%s, 1), (%s, 2)", (HELD, UNTAKEN))


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    conn = await connect(Settings(pg_url))
    try:
        await schema.migrate(conn)
    finally:
        await conn.close()
    opened = await Database.open(Settings(pg_url))
    yield opened
    await opened.close()


async def test_leases_are_read_with_the_time_left_by_the_databases_clock(
    db: Database, pg_url: str
) -> None:
    seed_leases(pg_url)
    held, expired, released, untaken = await read_leases(db)
    assert (held.service_sid, held.owner, held.epoch) == (HELD, "pod-a", 7)
    assert held.expires_in is not None and 50 < held.expires_in <= 60
    assert (expired.owner, expired.epoch) == ("pod-b", 3)
    assert expired.expires_in is not None and -10 < expired.expires_in <= -5
    assert (released.service_sid, released.owner, released.epoch) == (RELEASED, None, 4)
    assert released.expires_in is not None and released.expires_in <= 0
    assert untaken == Lease(UNTAKEN, None, 0, None)


async def test_no_lease_and_no_watch_is_an_empty_list(db: Database) -> None:
    assert await read_leases(db) == ()


def _summary(leases: tuple[Lease, ...] | None) -> Summary:
    return Summary(
        backend="x",
        location="somewhere",
        schema_version=1,
        sessions=SessionCounts(0, 0, 0, 0),
        interactions_tracked=0,
        outbox=OutboxSummary({}, {}, None, ()),
        watches=(),
        leases=leases,
    )


def test_leases_print_as_one_object_per_service_and_are_absent_without_leases() -> None:
    shown = _summary((Lease(HELD, "pod-a", 7, 12.5), Lease(UNTAKEN, None, 0, None))).to_json()
    assert shown["leases"] == [
        {"service_sid": HELD, "owner": "pod-a", "epoch": 7, "expires_in": 12.5},
        {"service_sid": UNTAKEN, "owner": None, "epoch": 0, "expires_in": None},
    ]
    assert _summary(()).to_json()["leases"] == []
    assert "leases" not in _summary(None).to_json()


async def test_a_sqlite_summary_has_no_leases(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "state.db") as store:
        summary = await store.summary()
    assert summary.leases is None
    assert "leases" not in summary.to_json()


def test_state_show_lists_the_leases_of_a_postgres_state(tmp_path: Path, pg_url: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-leases"},
                "state": {"url": pg_url},
                "watch": [{"service_sid": HELD, "all_sessions": True}],
                "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
            }
        )
    )
    assert run_poller("state", "show", "-c", str(config)).returncode == 0  # migrates
    seed_leases(pg_url)
    result = run_poller("state", "show", "-c", str(config))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["backend"] == "postgres"
    assert [(x["service_sid"], x["owner"], x["epoch"]) for x in shown["leases"]] == [
        (HELD, "pod-a", 7),
        (EXPIRED, "pod-b", 3),
        (RELEASED, None, 4),
        (UNTAKEN, None, 0),
    ]
    assert 50 < shown["leases"][0]["expires_in"] <= 60
