"""Hostile Twilio answers against the real ``poller once``: ids never reused, memory bounded.

The Twilio side is a small aiohttp server of the test's own on 127.0.0.1
(``tests/hostile_twilio.py``); ``poller once`` runs as a child process and its peak RSS is its
own (``tests.support.run_measured``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from poller.lab.receiver import ReceiverThread
from poller.state.sqlite.store import SqliteStore
from tests.hostile_twilio import ACCOUNT, SERVICE, SESSION, TOKEN, HostileTwilioThread, interaction
from tests.support import ROOT, SECRET, poller_cmd, run_measured

pytestmark = pytest.mark.slow

RSS_LIMIT_MIB = 400
KI1 = "KI" + "1" * 32
KI2 = "KI" + "2" * 32


@dataclass(frozen=True)
class Run:
    returncode: int
    peak_rss_mib: float
    seconds: float
    log: list[dict[str, Any]]


@pytest.fixture
def twilio() -> Iterator[HostileTwilioThread]:
    with HostileTwilioThread() as running:
        yield running


def write_config(folder: Path, twilio: HostileTwilioThread, receiver_url: str) -> Path:
    config = {
        "twilio": {
            "account_sid": ACCOUNT,
            "auth_token": TOKEN,
            "base_url": twilio.base_url,
            "retry_deadline_seconds": 5,
        },
        "state": {"path": str(folder / "state.db")},
        "poll": {"first_run": "notify_all", "timeout_seconds": 60},
        "watch": [{"service_sid": SERVICE, "sessions": [SESSION]}],
        "sinks": [
            {"name": "ops", "type": "webhook", "url": f"{receiver_url}/hooks/ops", "secret": SECRET}
        ],
        "log": {"format": "json", "level": "info"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_once(config: Path, folder: Path) -> Run:
    """``poller once`` in a child process: its exit status, its own peak RSS, time, log."""
    env = {k: v for k, v in os.environ.items() if k != "POLLER_CONFIG"}
    log_path = folder / f"once-{time.monotonic_ns()}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        run = run_measured(
            poller_cmd("once", "-c", str(config)), folder, stdout=log, stderr=log, env=env, cwd=ROOT
        )
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return Run(run.returncode, run.peak_rss_mib, time.monotonic() - started, lines)


def state_of(folder: Path) -> tuple[dict[str, Any], int]:
    return asyncio.run(state_of_async(folder))


async def state_of_async(folder: Path) -> tuple[dict[str, Any], int]:
    """The session's known set and the outbox's pending count, read beside nothing."""
    async with SqliteStore.open(folder / "state.db", shared=True) as store:
        return dict(await store.known(SESSION)), await store.pending_count()


def bad_answers(run: Run) -> list[str]:
    return [line["kind"] for line in run.log if line["event"] == "twilio_bad_response"]


def test_an_interaction_missing_from_one_listing_is_updated_not_created_again(
    twilio: HostileTwilioThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = write_config(tmp_path, twilio, receiver.base_url)
    sent = interaction(KI1, "2026-11-27T10:00:00Z", "sent")
    delivered = interaction(KI1, "2026-11-27T10:00:05Z", "delivered")
    other = interaction(KI2, "2026-11-27T10:00:00Z", "delivered")
    for listing in ([sent, other], [other], [delivered, other]):
        twilio.state.listing = listing
        assert run_once(config, tmp_path).returncode == 0

    got = receiver.received()
    assert [(r.event_type, r.body["data"]["interaction"]["sid"]) for r in got] == [
        ("interaction.created", KI1),
        ("interaction.created", KI2),
        ("interaction.updated", KI1),
    ]
    assert got[2].body["data"]["changes"] == {
        "date_updated": ["2026-11-27T10:00:00Z", "2026-11-27T10:00:05Z"],
        "outbound_resource_status": ["sent", "delivered"],
    }
    assert len({r.webhook_id for r in got}) == 3


def test_a_page_whose_meta_key_names_another_list_fails_the_poll_and_commits_nothing(
    twilio: HostileTwilioThread, receiver: ReceiverThread, tmp_path: Path
) -> None:
    config = write_config(tmp_path, twilio, receiver.base_url)
    twilio.state.listing = [interaction(KI1, "2026-11-27T10:00:00Z", "sent")]
    assert run_once(config, tmp_path).returncode == 0
    before = state_of(tmp_path)

    twilio.state.mode = "other_key"
    twilio.state.listing = []
    run = run_once(config, tmp_path)
    assert run.returncode == 1
    assert bad_answers(run) == ["meta_key_mismatch"]
    assert state_of(tmp_path) == before
    assert len(receiver.received()) == 1


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("gzip_bomb", "inflated_body_too_large"),
        ("endless", "too_many_records"),
        ("huge", "body_too_large"),
    ],
)
def test_a_hostile_answer_is_refused_within_bounded_memory(
    twilio: HostileTwilioThread,
    receiver: ReceiverThread,
    tmp_path: Path,
    mode: str,
    kind: str,
) -> None:
    config = write_config(tmp_path, twilio, receiver.base_url)
    twilio.state.mode = mode
    run = run_once(config, tmp_path)
    print(f"\n{mode}: peak RSS {run.peak_rss_mib:.0f} MiB, {run.seconds:.1f} s")  # for the record

    assert run.returncode == 1
    assert run.peak_rss_mib < RSS_LIMIT_MIB
    assert bad_answers(run) == [kind]
    assert state_of(tmp_path) == ({}, 0)
    assert receiver.received() == []
    if mode == "huge":  # the read stopped at the limit: the rest of the 500 MB was never taken
        assert twilio.state.sent_bytes < 100 * 1024 * 1024
