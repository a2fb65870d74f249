"""``poller demo``: the embedded default, with no Twilio account.

A Twilio Proxy simulator with live traffic and a webhook receiver that verifies signatures run
on loopback; the real daemon polls the one and delivers to the other, with a generated config
(kept in the demo's folder, to read). Each delivered event is printed as one line; at the end,
a summary checks every change the simulator made against what the receiver got.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from poller.app import build_app
from poller.config import load_config
from poller.daemon import Daemon
from poller.lab.receiver import Received, ReceiverState, start_receiver
from poller.lab.simulator import RunningSimulator, start_simulator
from poller.observe.logs import configure_logging
from poller.state.open import open_store
from poller.twilio.records import Fingerprint

INTERVAL_SECONDS = 2.0
FIRST_CYCLE_SECONDS = 10.0  # the longest the traffic waits for the daemon's first cycle
TRAFFIC_PER_SECOND = 2.0
SESSIONS = 3


def _short(sid: object) -> str:
    return f"{str(sid)[:2]}…{str(sid)[-4:]}" if sid else "-"


class Printer:
    """Print one readable line per delivered event (never a message body)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.ids: Counter[str] = Counter()
        self.types: Counter[str] = Counter()
        self.fingerprints: set[tuple[str, Fingerprint]] = set()
        self.delays: list[float] = []

    def __call__(self, item: Received) -> None:
        self.ids[item.webhook_id] += 1
        if self.ids[item.webhook_id] > 1:
            return
        self.types[item.event_type] += 1
        data = item.body.get("data", {})
        record: dict[str, Any] = data.get("interaction", {})
        fp = Fingerprint(
            record.get("date_updated"),
            record.get("inbound_resource_status"),
            record.get("outbound_resource_status"),
        )
        self.fingerprints.add((str(record.get("sid")), fp))
        if "changes" in data:
            detail = ", ".join(f"{k}: {v[0]} → {v[1]}" for k, v in data["changes"].items())
        else:
            detail = f"in={fp.inbound_resource_status} out={fp.outbound_resource_status}"
        print(
            f"+{time.monotonic() - self.started:6.1f}s  {item.event_type:<20}"
            f"  {record.get('type') or '?':<7}  session {_short(data.get('session_sid'))}"
            f"  {_short(record.get('sid'))}  {detail}"
            f"  {'signed ✓' if item.signed else 'unsigned'}",
            flush=True,
        )


def _write_config(
    folder: Path, sim: RunningSimulator, receiver_url: str, secret: str
) -> tuple[Path, dict[str, str]]:
    """Write the demo's config; return its path and the variables its ``${...}`` name."""
    account, token = sim.credentials
    service = sim.simulator.service_sids()[0]
    config = {
        "twilio": {
            "account_sid": account,
            "auth_token": "${DEMO_TWILIO_AUTH_TOKEN}",
            "base_url": sim.base_url,
            "page_size": 50,
            "max_requests_per_second": 25,
        },
        "state": {"path": str(folder / "state.db")},
        "poll": {"interval_seconds": INTERVAL_SECONDS, "first_run": "baseline"},
        "watch": [{"service_sid": service, "all_sessions": True}],
        "sinks": [
            {
                "name": "demo-receiver",
                "type": "webhook",
                "url": f"{receiver_url}/hooks/proxy",
                "secret": "${DEMO_WEBHOOK_SECRET}",
            }
        ],
        "log": {"format": "console", "level": "warning"},
    }
    env = {"DEMO_TWILIO_AUTH_TOKEN": token, "DEMO_WEBHOOK_SECRET": secret}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, env


def _seed(sim: RunningSimulator) -> list[str]:
    """A Service with sessions that already hold history (baselined: not notified)."""
    s = sim.simulator
    service = s.add_service("Demo rides")["sid"]
    sessions = [s.add_session(service, unique_name=f"ride-{n}")["sid"] for n in range(SESSIONS)]
    for session in sessions:
        for _ in range(3):
            record = s.add_interaction(service, session, body="an old message")
            s.set_status(record["sid"], outbound="delivered")
    return sessions


async def _demo(duration: float | None, folder: Path) -> int:
    started = time.monotonic()
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    printer = Printer(started)
    sim = await start_simulator(seed=None)
    receiver = await start_receiver(state=ReceiverState(secret=secret, on_event=printer))
    _seed(sim)
    baseline_mark = len(sim.simulator.change_log())
    config_path, env = _write_config(folder, sim, receiver.base_url, secret)
    config = load_config(config_path, env)
    configure_logging(config.log.format, config.log.level)
    store = await open_store(config.state)
    print(f"simulator  {sim.base_url}   receiver  {receiver.base_url}   config  {config_path}")
    daemon = Daemon(
        config, store, build=build_app, reload=functools.partial(load_config, config_path, env)
    )
    daemon_task = asyncio.create_task(daemon.run())
    stop_traffic = asyncio.Event()
    traffic = None
    try:
        await _first_cycle(daemon, daemon_task)
        print(
            f"{SESSIONS} sessions with history (recorded, not notified); live traffic starts now."
        )
        traffic = asyncio.create_task(sim.run_traffic(TRAFFIC_PER_SECOND, stop=stop_traffic))
        await _run_for(duration, daemon, stop_traffic, sim, printer, baseline_mark)
    finally:
        stop_traffic.set()
        daemon.stop.set()
        exit_code = await daemon_task
        if traffic is not None:
            with contextlib.suppress(Exception):
                await traffic
        _summary(sim, printer, baseline_mark, receiver.state, time.monotonic() - started)
        await receiver.stop()
        await sim.stop()
        await store.close()
    return exit_code


async def _first_cycle(daemon: Daemon, running: asyncio.Task[int]) -> None:
    """Wait until the daemon's first cycle has recorded the seeded history (or it ended).

    Traffic begun with the daemon would race that cycle: an interaction made before the first
    poll of its session is history, recorded and not notified, as on any first start, and the
    summary would count it as not delivered.
    """
    succeeded = asyncio.create_task(daemon.health.first_success.wait())
    await asyncio.wait(
        {succeeded, running}, timeout=FIRST_CYCLE_SECONDS, return_when=asyncio.FIRST_COMPLETED
    )
    succeeded.cancel()


async def _run_for(
    duration: float | None,
    daemon: Daemon,
    stop_traffic: asyncio.Event,
    sim: RunningSimulator,
    printer: Printer,
    mark: int,
) -> None:
    """Run traffic until the last stretch, then wait until every change was delivered."""
    if duration is None:
        await daemon.stop.wait()
        return
    catch_up = min(duration / 2, 3 * INTERVAL_SECONDS + 1)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(daemon.stop.wait(), timeout=max(0.0, duration - catch_up))
    stop_traffic.set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + catch_up
    while loop.time() < deadline and not daemon.stop.is_set():
        if not _missing(sim, printer, mark):
            return
        await asyncio.sleep(0.1)


def _missing(sim: RunningSimulator, printer: Printer, mark: int) -> list[tuple[str, Fingerprint]]:
    """The latest state of each changed interaction that no delivered event carried.

    Polling sees snapshots: a state that lasted less than one poll (``queued`` then ``sent``
    within a second) is folded into the next one, so only the latest state of each
    interaction must have arrived.
    """
    latest = {c.interaction_sid: c.fingerprint for c in sim.simulator.change_log(mark)}
    return sorted(set(latest.items()) - printer.fingerprints)


def _summary(
    sim: RunningSimulator, printer: Printer, mark: int, receiver: ReceiverState, took: float
) -> None:
    changes = len(sim.simulator.change_log(mark))
    missing = _missing(sim, printer, mark)
    duplicates = sum(n - 1 for n in printer.ids.values())
    requests = sim.simulator.stats()["total_requests"]
    print()
    print(f"summary after {took:.1f}s:")
    print(f"  simulator changes made      {changes}")
    print(
        f"  events delivered            {sum(printer.types.values())}"
        f"  ({printer.types['interaction.created']} created,"
        f" {printer.types['interaction.updated']} updated)"
    )
    print(f"  latest states not delivered {len(missing)}")
    print(f"  redeliveries (same id)      {duplicates}")
    print(f"  bad signatures              {receiver.rejected_signatures}")
    print(f"  Twilio requests made        {requests}")


def run_demo(*, duration: float | None = None, state_dir: str | None = None) -> int:
    """Run the demo; returns the daemon's exit status (0 on a clean stop)."""
    if state_dir is not None:
        folder = Path(state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_demo(duration, folder))
    with tempfile.TemporaryDirectory(prefix="poller-demo-") as tmp:
        return asyncio.run(_demo(duration, Path(tmp)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(duration=20))
