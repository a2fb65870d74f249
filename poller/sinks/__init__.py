"""Sinks: where events go. The ``Sink`` protocol and the registry that builds sinks from config.

Each sink module is imported only when a config names its type, so one sink's dependencies
never load for another's users.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from poller.events import Event
from poller.record import Record

if TYPE_CHECKING:
    import httpx

    from poller.config import (
        DiscordSinkConfig,
        EmailSinkConfig,
        SlackSinkConfig,
        TeamsSinkConfig,
        WebhookSinkConfig,
    )

    SinkConfig = (
        WebhookSinkConfig | SlackSinkConfig | TeamsSinkConfig | DiscordSinkConfig | EmailSinkConfig
    )


class Sink(Protocol):
    """A destination for events; ``send`` raises ``poller.errors.DeliveryError`` subclasses."""

    name: str
    include_data: bool
    digest_threshold: int | None  # None: never digest

    async def send(self, event: Event) -> None: ...

    async def send_digest(self, events: Sequence[Event]) -> None: ...

    async def aclose(self) -> None: ...


class ThreadStore(Protocol):
    """What a sink may keep in the state: the Slack thread of each session."""

    async def thread_ts(self, sink: str, session_sid: str) -> str | None: ...

    async def set_thread_ts(self, sink: str, session_sid: str, ts: str) -> None: ...


@runtime_checkable
class PaceStore(Protocol):
    """What a paced sink may keep in the state: when it may post next (Unix times)."""

    async def sink_pace(self, sink: str) -> tuple[float, float] | None: ...

    async def set_sink_pace(self, sink: str, *, not_before: float, now: float) -> None: ...


@dataclass(frozen=True, repr=False, eq=False)
class SinkDeps(Record):
    """What the registry hands every sink factory besides its config."""

    store: ThreadStore
    clock: Callable[[], float]
    transport: httpx.AsyncBaseTransport | None


SinkFactory = Callable[["SinkConfig", SinkDeps], Sink]


def _webhook(config: SinkConfig, deps: SinkDeps) -> Sink:
    from poller.config import WebhookSinkConfig
    from poller.sinks.webhook import WebhookSink

    if not isinstance(config, WebhookSinkConfig):
        raise TypeError(f"sink {config.name!r}: expected a webhook config")
    return WebhookSink(config, transport=deps.transport, clock=deps.clock)


def _slack(config: SinkConfig, deps: SinkDeps) -> Sink:
    from poller.config import SlackSinkConfig
    from poller.sinks.slack import SlackSink

    if not isinstance(config, SlackSinkConfig):
        raise TypeError(f"sink {config.name!r}: expected a slack config")
    # Slack paces itself on a monotonic clock of its own; the wall clock is not for it. Its
    # pacing is kept in the state when the state can keep it (``poller once`` from cron).
    pace = deps.store if isinstance(deps.store, PaceStore) else None
    return SlackSink(config, store=deps.store, transport=deps.transport, pace_store=pace)


def _teams(config: SinkConfig, deps: SinkDeps) -> Sink:
    from poller.config import TeamsSinkConfig
    from poller.sinks.teams import TeamsSink

    if not isinstance(config, TeamsSinkConfig):
        raise TypeError(f"sink {config.name!r}: expected a teams config")
    return TeamsSink(config, transport=deps.transport)


def _discord(config: SinkConfig, deps: SinkDeps) -> Sink:
    from poller.config import DiscordSinkConfig
    from poller.sinks.discord import DiscordSink

    if not isinstance(config, DiscordSinkConfig):
        raise TypeError(f"sink {config.name!r}: expected a discord config")
    return DiscordSink(config, transport=deps.transport)


def _email(config: SinkConfig, deps: SinkDeps) -> Sink:
    from poller.config import EmailSinkConfig
    from poller.sinks.email import EmailSink

    if not isinstance(config, EmailSinkConfig):
        raise TypeError(f"sink {config.name!r}: expected an email config")
    return EmailSink(config)  # SMTP, not HTTP: the transport is not for it


SINK_TYPES: Mapping[str, SinkFactory] = {
    "webhook": _webhook,
    "slack": _slack,
    "teams": _teams,
    "discord": _discord,
    "email": _email,
}


def build_sinks(
    configs: Sequence[SinkConfig],
    *,
    store: ThreadStore,
    clock: Callable[[], float] = time.time,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Sink]:
    """Build one sink per config, in config order; the caller owns each sink's ``aclose()``.

    ``transport`` replaces every sink's HTTP transport (tests); ``clock`` is the wall clock
    that stamps webhook attempts.
    """
    deps = SinkDeps(store=store, clock=clock, transport=transport)
    sinks: list[Sink] = []
    for config in configs:
        factory = SINK_TYPES.get(config.type)
        if factory is None:
            raise ValueError(f"sink {config.name!r}: unknown type {config.type!r}")
        sinks.append(factory(config, deps))
    return sinks
