"""``poller once``: poll every watched session once, then attempt every pending delivery."""

from __future__ import annotations

import asyncio
import time

import structlog

from poller.app import App
from poller.errors import CredentialsError, SourceError
from poller.poll import PollOutcome
from poller.watchlist import resolve

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_INCOMPLETE = 1


async def poll_all(app: App) -> list[PollOutcome]:
    """Poll every watched session once (vanished ones get their final poll)."""
    targets, vanished = await resolve(app.config.watch, app.client, app.store, time.time())
    jobs = [
        app.poller.poll(
            t.service_sid,
            t.session_sid,
            new_traffic=t.new_traffic,
            activity_marker=t.session.activity_marker if t.session else None,
            status=t.session.status if t.session else None,
        )
        for t in targets
    ]
    jobs += [app.poller.poll(t.service_sid, t.session_sid, final=True) for t in vanished]
    return list(await asyncio.gather(*jobs))


async def run_once(app: App) -> int:
    """Return 0 when every poll succeeded and nothing is left pending, else 1."""
    deadline = time.monotonic() + app.config.delivery.once_deadline_seconds
    failed = 0
    try:
        outcomes = await poll_all(app)
        failed = sum(1 for o in outcomes if not o.ok and not o.gone)
    except CredentialsError:
        raise
    except SourceError as exc:
        log.error("session_list_failed", error=str(exc))
        failed += 1
    result = await app.dispatcher.run_once(ignore_timers=True, deadline=deadline)
    pending = app.store.pending_count()
    log.info(
        "once_finished",
        polls_failed=failed,
        delivered=result.delivered,
        pending=pending,
        dead=result.dead,
    )
    return EXIT_OK if failed == 0 and pending == 0 else EXIT_INCOMPLETE
