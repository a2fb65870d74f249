"""``poller once``: poll every watched session once, then attempt every pending delivery.

With several replicas (PostgreSQL) it takes what leases it can in one round, polls and delivers
only the Services it then owns (the others are said to be owned by another replica), and
releases them at the end.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from poller.app import App, build_app, retire_removed_sinks, sync_watch
from poller.config import Config
from poller.errors import StateError
from poller.lab.crashpoints import NO_CRASH, CrashPoints
from poller.replicas.base import Ownership, SoleOwner
from poller.replicas.open import watched_services
from poller.state.base import StateStore
from poller.state.pruning import prune_state
from poller.watch.cycle import CycleResult

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_INCOMPLETE = 1


async def run_once(app: App, ownership: Ownership | None = None) -> int:
    """Return 0 when every poll succeeded and every event was delivered, else 1.

    ``ownership`` (None: every Service is this process's) is started for one round first and
    stopped (its leases released) at the end.
    """
    ownership = ownership if ownership is not None else SoleOwner()
    await ownership.start(watched_services(app.config), _unheard)
    try:
        return await _run_owned(app, ownership)
    finally:
        try:
            await ownership.stop()
        except StateError as exc:  # the leases then expire on their own
            log.error("ownership_stop_failed", error=str(exc), error_type=type(exc).__name__)


def _unheard(service_sid: str, owned: bool) -> None:
    """``once`` polls what it owns after its one round; later changes come too late to matter."""


async def _run_owned(app: App, ownership: Ownership) -> int:
    deadline = time.monotonic() + app.config.delivery.once_deadline_seconds
    await sync_watch(app, time.time())
    orphaned = await retire_removed_sinks(app, time.time())
    owned = [c for c in app.cycles if ownership.owns(c.watch.service_sid)]
    others = [c.watch.service_sid for c in app.cycles if c not in owned]
    if others:
        log.info(
            "services_not_owned",
            service_sids=others,
            replica=ownership.replica,
            reason="owned by another replica",
        )
    results: list[CycleResult] = await asyncio.gather(
        *(cycle.run(everything=True) for cycle in owned)
    )
    failed = sum(r.failed + r.listing_failed for r in results)
    delivery = await app.dispatcher.run_once(ignore_timers=True, deadline=deadline)
    pending = delivery.pending_left
    await prune_state(app.store, app.config, time.time())
    log.info(
        "once_finished",
        polled=sum(r.planned for r in results),
        polls_failed=failed,
        events=sum(r.events for r in results),
        delivered=delivery.delivered,
        dead_lettered=delivery.dead,
        pending=pending,
        not_owned=others,
        deliveries_not_owned=delivery.not_owned,
    )
    gave_up = delivery.dead + orphaned
    return EXIT_OK if failed == 0 and pending == 0 and gave_up == 0 else EXIT_INCOMPLETE


async def once_from_config(
    config: Config,
    store: StateStore,
    *,
    crash: CrashPoints = NO_CRASH,
    ownership: Ownership | None = None,
) -> int:
    """Build every part on ``store``, run :func:`run_once`, close all; return its exit status."""
    ownership = ownership if ownership is not None else SoleOwner()
    app = await build_app(config, store, crash=crash, owns=ownership.owns)
    try:
        return await run_once(app, ownership)
    finally:
        await app.aclose()
