"""The parts of a running poller, built from one validated config and an open state.

``cli`` (the composition root) opens the state and builds the App; the daemon gets an
:data:`AppBuilder` to build it again on a reload, on the same state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import structlog

from poller.config import Config
from poller.delivery.dispatcher import Dispatcher
from poller.delivery.policy import DeliveryPolicy
from poller.detect.planner import PlanSettings
from poller.events import SESSION_EVENT_TYPES
from poller.lab.crashpoints import NO_CRASH, CrashPoints
from poller.sinks import Sink, build_sinks
from poller.state.base import StateStore
from poller.twilio.body import AnswerLimits
from poller.twilio.client import ProxyClient
from poller.watch.cycle import ServiceCycle
from poller.watch.poll import SessionPoller

log = structlog.get_logger(__name__)


@dataclass
class App:
    """What a running poller is made of; ``aclose`` closes it, the state included."""

    config: Config
    store: StateStore
    client: ProxyClient
    sinks: list[Sink]
    poller: SessionPoller
    dispatcher: Dispatcher
    wake: asyncio.Event
    cycles: list[ServiceCycle]

    async def aclose(self) -> None:
        await self.client.aclose()
        for sink in self.sinks:
            await sink.aclose()
        await self.store.close()


async def build_app(
    config: Config,
    store: StateStore,
    *,
    twilio_transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    crash: CrashPoints = NO_CRASH,
    owns: Callable[[str], bool] = lambda _service_sid: True,
) -> App:
    """Build every part on ``store`` (closed if building fails); the caller owns ``aclose()``.

    ``owns``: whether this replica delivers a Service's events now (``Ownership.owns``).
    """
    try:
        client = ProxyClient(
            config.twilio, transport=twilio_transport, limits=AnswerLimits.of(config.twilio)
        )
        sinks = build_sinks(config.sinks, store=store)
    except BaseException:
        await store.close()
        raise
    wake = asyncio.Event()
    fetch_sessions = any(set(sink.events) & set(SESSION_EVENT_TYPES) for sink in config.sinks)
    poller = SessionPoller(
        client,
        store,
        config.poll,
        config.sinks,
        clock=clock,
        on_events=wake.set,
        # A Session fetch is a request: made only when a sink takes session events.
        session_source=client if fetch_sessions else None,
        crash=crash,
    )
    dispatcher = Dispatcher(
        store, sinks, DeliveryPolicy(config.delivery), clock=clock, crash=crash, owns=owns
    )
    plan = PlanSettings(
        interval_seconds=config.poll.interval_seconds,
        full_sweep_seconds=config.poll.full_sweep_seconds,
        requests_per_second=config.twilio.max_requests_per_second,
        requests_per_unlisted_poll=2 if fetch_sessions else 1,
    )
    cycles = [
        ServiceCycle(
            watch,
            client,
            poller,
            store,
            plan,
            page_size=config.twilio.page_size,
            concurrency=config.twilio.max_concurrency,
            clock=clock,
        )
        for watch in config.watch
    ]
    return App(config, store, client, sinks, poller, dispatcher, wake, cycles)


# Builds the App from a config on the state given (``cli`` binds everything else).
AppBuilder = Callable[[Config, StateStore], Awaitable[App]]


async def retire_removed_sinks(app: App, now: float) -> int:
    """Dead-letter what waits for sinks the config no longer has (kept, requeueable)."""
    retired = await app.store.dead_letter_other_sinks([s.name for s in app.config.sinks], now=now)
    if retired:
        log.warning("removed_sink_deliveries_dead_lettered", deliveries=retired)
    return retired


async def sync_watch(app: App, now: float) -> tuple[int, int]:
    """Align the stored sessions with the config's watch list; return (retired, revived).

    Sessions the config no longer watches are marked gone (pruned after the grace period;
    their pending deliveries still go out), and a Service no longer watched loses its watch
    start, so watching it again later begins a new watch (what exists then is baselined).
    Sessions an explicit list names again are revived: polled once more, and a 404 marks
    them gone again.
    """
    watches = {w.service_sid: w for w in app.config.watch}
    retired = revived = 0
    for state in await app.store.sessions(None):
        watch = watches.get(state.service_sid)
        watched = watch is not None and (watch.all_sessions or state.session_sid in watch.sessions)
        if state.gone_at is None and not watched:
            await app.store.mark_session_gone(state.session_sid, now)
            retired += 1
        elif state.gone_at is not None and watch is not None and not watch.all_sessions and watched:
            await app.store.revive_session(state.session_sid)
            revived += 1
    for service_sid in await app.store.watched_services():
        if service_sid not in watches or not watches[service_sid].all_sessions:
            await app.store.end_watch(service_sid)
    return retired, revived
