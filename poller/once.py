"""``poller once``: poll every watched session once, then attempt every pending delivery."""

from __future__ import annotations

import asyncio
import time

import structlog

from poller.app import App, build_app, retire_removed_sinks, sync_watch
from poller.config import Config
from poller.lab.crashpoints import NO_CRASH, CrashPoints
from poller.state.base import StateStore
from poller.watch.cycle import CycleResult

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_INCOMPLETE = 1


async def run_once(app: App) -> int:
    """Return 0 when every poll succeeded and every event was delivered, else 1."""
    deadline = time.monotonic() + app.config.delivery.once_deadline_seconds
    await sync_watch(app, time.time())
    orphaned = await retire_removed_sinks(app, time.time())
    results: list[CycleResult] = await asyncio.gather(
        *(cycle.run(everything=True) for cycle in app.cycles)
    )
    failed = sum(r.failed + r.listing_failed for r in results)
    delivery = await app.dispatcher.run_once(ignore_timers=True, deadline=deadline)
    pending = delivery.pending_left
    await app.store.prune(time.time(), app.config.state.prune_after_seconds)
    log.info(
        "once_finished",
        polled=sum(r.planned for r in results),
        polls_failed=failed,
        events=sum(r.events for r in results),
        delivered=delivery.delivered,
        dead_lettered=delivery.dead,
        pending=pending,
    )
    gave_up = delivery.dead + orphaned
    return EXIT_OK if failed == 0 and pending == 0 and gave_up == 0 else EXIT_INCOMPLETE


async def once_from_config(
    config: Config, store: StateStore, *, crash: CrashPoints = NO_CRASH
) -> int:
    """Build every part on ``store``, run :func:`run_once`, close all; return its exit status."""
    app = await build_app(config, store, crash=crash)
    try:
        return await run_once(app)
    finally:
        await app.aclose()
