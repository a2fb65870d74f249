"""The status snapshot on PostgreSQL: the leases, the replicas seen, and this replica's id."""

from __future__ import annotations

from typing import Any

import psycopg

from poller.config import parse_config
from poller.observe.cycles import CycleLog
from poller.observe.status import StatusSource
from poller.observe.status_page import render_page
from poller.state.postgres.db import Settings
from poller.state.postgres.store import PostgresStore

HELD, OTHER = ("KS" + c * 32 for c in "12")


async def test_leases_and_replicas_are_shown_on_postgresql(pg_url: str) -> None:
    config = parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
            "state": {"url": pg_url},
            "watch": [{"service_sid": HELD, "all_sessions": True}],
            "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        },
        {},
    )
    store = await PostgresStore.open(Settings(pg_url))
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO leases (service_sid, owner, epoch, acquired_at, expires_at) VALUES "
                "(%s, 'pod-a', 7, now(), now() + interval '60 seconds'), "
                "(%s, 'pod-b', 2, now(), now() + interval '30 seconds')",
                (HELD, OTHER),
            )
        source = StatusSource(store, lambda: config, CycleLog(), replica="pod-c")
        snapshot = await source.snapshot()
        data: Any = snapshot.to_json()
    finally:
        await store.close()
    assert data["backend"] == "postgres" and data["replica"] == "pod-c"
    assert [(lease["service_sid"], lease["owner"], lease["epoch"]) for lease in data["leases"]] == [
        (HELD, "pod-a", 7),
        (OTHER, "pod-b", 2),
    ]
    assert 50 < data["leases"][0]["expires_in"] <= 60
    assert data["replicas"] == ["pod-a", "pod-b", "pod-c"]
    page = render_page(snapshot)
    assert "<h2>Leases</h2>" in page and "replicas seen: pod-a, pod-b, pod-c" in page
