"""POSTing JSON to one chat webhook (Teams, Discord): paced, bounded, transport failures classified.

The webhook URL is a credential: it is never logged or put in an error. Every post waits its
turn in a :class:`poller.sinks.slack_api.Pacer`; a sink that learns of a pause (``Retry-After``,
Discord's rate-limit headers) calls :meth:`JsonPoster.hold_off`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx

from poller.http.body import Answer, read_answer
from poller.http.failures import HttpFailure, TimedOut, answer_within
from poller.http.transport import async_client
from poller.sinks.answers import failure
from poller.sinks.slack_api import Clock, Pacer, Sleep

if TYPE_CHECKING:
    from poller.config import Secret

_MAX_ANSWER_BYTES = 64 * 1024
# Posts are paced one at a time, so a small pool is plenty.
POOL_LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=2)


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the bytes whose size the destinations' limits count."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class JsonPoster:
    """HTTP for one sink: each post paced and bounded in time, a silent destination retried."""

    def __init__(
        self,
        kind: str,
        sink: str,
        *,
        timeout: float,
        interval: float,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._kind = kind
        self._sink = sink
        self._timeout = timeout
        self._pacer = Pacer(interval, clock=clock, sleep=sleep)
        self._client = async_client(transport, timeout=timeout, limits=POOL_LIMITS)

    def hold_off(self, seconds: float) -> None:
        """Let no post through for ``seconds`` from now."""
        self._pacer.hold_off(seconds)

    async def post(
        self, url: str, payload: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> Answer:
        """POST ``payload`` to ``url`` in its turn; return the answer, whatever its status."""
        content = encode(payload)
        headers = {"content-type": "application/json"}
        async with self._pacer.turn() as held:
            if held:
                raise failure(
                    self._kind,
                    self._sink,
                    "paused",
                    ("retry", f"the destination asked for a pause, {held:.0f} s left"),
                    retry_after=held,
                )
            return await self._send(url, content, headers, params)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
    ) -> Answer:
        try:
            # A whole-request bound: a trickling answer is bounded too.
            async with (
                answer_within(self._timeout),
                self._client.stream(
                    "POST", url, content=content, headers=headers, params=params
                ) as response,
            ):
                return await read_answer(response, _MAX_ANSWER_BYTES, cut=True)
        except TimedOut as exc:
            reason = f"no answer within {self._timeout:g} s ({exc.reason})"
            raise failure(self._kind, self._sink, "timeout", ("retry", reason)) from exc.__cause__
        except HttpFailure as exc:  # no answer, or one whose body does not inflate
            reason = f"transport failure ({exc.reason})"
            raise failure(self._kind, self._sink, "transport", ("retry", reason)) from exc.__cause__


class ChatWebhookSettings(Protocol):
    """What a chat webhook sink reads from its config (Teams, Discord)."""

    @property
    def name(self) -> str: ...
    @property
    def include_data(self) -> bool: ...
    @property
    def digest_threshold(self) -> int: ...
    @property
    def webhook_url(self) -> Secret: ...
    @property
    def timeout_seconds(self) -> float: ...


class ChatWebhookSink:
    """What the Teams and Discord sinks share: one secret webhook URL and one paced poster.

    A subclass names its ``kind`` (for errors and metrics) and its ``post_interval_seconds``.
    """

    kind: ClassVar[str]
    post_interval_seconds: ClassVar[float]

    def __init__(
        self,
        config: ChatWebhookSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.name = config.name
        self.include_data = config.include_data
        self.digest_threshold: int | None = config.digest_threshold
        self._url = config.webhook_url.get_secret_value()
        self._poster = JsonPoster(
            self.kind,
            config.name,
            timeout=config.timeout_seconds,
            interval=self.post_interval_seconds,
            transport=transport,
            clock=clock,
            sleep=sleep,
        )

    async def aclose(self) -> None:
        await self._poster.aclose()
