"""The Slack sink: one readable Block Kit message per event, or one digest for a burst.

Two modes, chosen by the config:

- incoming webhook (``webhook_url``): every message goes to the webhook's channel;
- Web API (``token`` + ``channel``): ``chat.postMessage``; the first event of a session starts a
  thread (its ``ts`` is kept in the state) and later events of that session reply in it.
  Digests go to the channel itself.

Messages are built in :mod:`poller.sinks.slack_blocks` (limits, escaping) and
:mod:`poller.sinks.slack_template` (templates); HTTP, pacing (one message per second) and error
classification live in :mod:`poller.sinks.slack_api`. A ``template`` shapes single-event
messages (digests keep the built-in summary); it renders in a worker thread within the bounds of
:mod:`poller.sinks.templates`, and one that fails or is cut short at run time is logged
(``template_failed``), counted, and the default message is sent instead. Twilio's values are
escaped before the template sees them, so a template may ping on purpose (``<!here>``) while
a message body never can.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import structlog

from poller.errors import ConfigError
from poller.events import Event
from poller.observe.metrics import TEMPLATE_FAILURES
from poller.sinks import PaceStore, ThreadStore
from poller.sinks.slack_api import Clock, SlackClient, Sleep
from poller.sinks.slack_blocks import Message, digest_message, event_message

if TYPE_CHECKING:
    from poller.config import Secret
    from poller.sinks.slack_template import MessageTemplate

__all__ = ["SlackSettings", "SlackSink"]

log = structlog.get_logger(__name__)


class SlackSettings(Protocol):
    """What the sink reads of its config (``poller.config.SlackSinkConfig`` has it all)."""

    @property
    def name(self) -> str: ...
    @property
    def include_data(self) -> bool: ...
    @property
    def webhook_url(self) -> Secret | None: ...
    @property
    def token(self) -> Secret | None: ...
    @property
    def channel(self) -> str | None: ...
    @property
    def digest_threshold(self) -> int: ...
    @property
    def template(self) -> str | None: ...
    @property
    def api_base_url(self) -> str: ...
    @property
    def timeout_seconds(self) -> float: ...


class SlackSink:
    """Deliver events to one Slack incoming webhook or one channel through the Web API."""

    def __init__(
        self,
        config: SlackSettings,
        *,
        store: ThreadStore,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        pace_store: PaceStore | None = None,
        wall: Clock = time.time,
    ) -> None:
        self.name = config.name
        self.include_data = config.include_data
        self.digest_threshold: int | None = config.digest_threshold
        self._config = config
        self._store = store
        self._template = _compile(config)
        self._client = SlackClient(
            config.name,
            timeout=config.timeout_seconds,
            transport=transport,
            clock=clock,
            sleep=sleep,
            pace_store=pace_store,
            wall=wall,
        )

    async def send(self, event: Event) -> None:
        """Post the message of ``event``; in Web API mode, in its session's thread."""
        message = await self._message(event)
        if self._config.webhook_url is not None:
            await self._client.post_webhook(self._config.webhook_url.get_secret_value(), message)
            return
        thread = await self._store.thread_ts(self.name, event.session_sid)
        answer = await self._post_message(message, thread_ts=thread)
        if thread is not None:
            return
        ts = answer.get("ts")
        if isinstance(ts, str) and ts:
            await self._store.set_thread_ts(self.name, event.session_sid, ts)
        else:
            log.warning("slack_thread_not_started", sink=self.name, reason="no ts in answer")

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Post ONE summary of ``events`` (to the channel, never in a thread)."""
        message = digest_message(events, include_data=self.include_data)
        if self._config.webhook_url is not None:
            await self._client.post_webhook(self._config.webhook_url.get_secret_value(), message)
        else:
            await self._post_message(message, thread_ts=None)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _message(self, event: Event) -> Message:
        if self._template is not None:
            try:
                return await self._template.render(event, include_data=self.include_data)
            except Exception as exc:  # a user's template may raise anything: fall back
                from poller.sinks.templates import failure_reason

                reason = failure_reason(exc)
                log.warning(
                    "template_failed",
                    sink=self.name,
                    event_id=event.id,
                    reason=reason,
                    error=type(exc).__name__,
                )
                TEMPLATE_FAILURES.labels(sink=self.name, reason=reason).inc()
        return event_message(event, include_data=self.include_data)

    async def _post_message(self, message: Message, *, thread_ts: str | None) -> Mapping[str, Any]:
        token = self._config.token
        if token is None or not self._config.channel:  # the config made sure; for mypy
            raise ConfigError(f"sinks.{self.name}: expected token and channel")
        body: dict[str, Any] = {"channel": self._config.channel, **message}
        if thread_ts is not None:
            body["thread_ts"] = thread_ts
        url = self._config.api_base_url.rstrip("/") + "/chat.postMessage"
        return await self._client.post_message(url, token.get_secret_value(), body)


def _compile(config: SlackSettings) -> MessageTemplate | None:
    if config.template is None:
        return None
    import jinja2  # only sinks with a template pay for it

    from poller.sinks.slack_template import MessageTemplate

    try:
        return MessageTemplate(config.template)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(
            f"sinks.{config.name}.template: expected a Jinja2 template, line {exc.lineno}: "
            f"{exc.message}"
        ) from exc
