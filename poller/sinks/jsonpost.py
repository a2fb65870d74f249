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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from poller.sinks.answers import failure
from poller.sinks.slack_api import USER_AGENT, Clock, Pacer, Sleep

if TYPE_CHECKING:
    from poller.config import Secret

_MAX_ANSWER_BYTES = 64 * 1024
# Posts are paced one at a time, so a small pool is plenty.
POOL_LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=2)
NO_ANSWER_ERRORS = (httpx.RequestError, aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True)
class Answer:
    """What the destination said: status, headers and (the start of) the body."""

    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Mapping[str, Any]:
        """The body as a JSON object, or an empty mapping when it is not one."""
        try:
            parsed = json.loads(self.body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}


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
        if transport is None:
            # httpx's own async transport costs about twice the CPU per request.
            transport = AiohttpTransport(limits=POOL_LIMITS)
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
            trust_env=False,  # environment proxies (HTTPS_PROXY) are never used
        )

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
            async with asyncio.timeout(self._timeout):  # a trickling answer is bounded too
                async with self._client.stream(
                    "POST", url, content=content, headers=headers, params=params
                ) as response:
                    body = await _read_bounded(response)
        except NO_ANSWER_ERRORS as exc:
            # httpx-aiohttp names every connection error ConnectTimeout; the aiohttp error it
            # chains says what happened.
            cause = exc.__cause__
            actual = cause if isinstance(cause, aiohttp.ClientError) else exc
            timed_out = isinstance(actual, httpx.TimeoutException | TimeoutError)
            answer = "timeout" if timed_out else "transport"
            reason = (
                f"no answer within {self._timeout:g} s ({type(actual).__name__})"
                if timed_out
                else f"transport failure ({type(actual).__name__})"
            )
            raise failure(self._kind, self._sink, answer, ("retry", reason)) from exc
        return Answer(response.status_code, response.headers, body)


async def _read_bounded(response: httpx.Response) -> bytes:
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) >= _MAX_ANSWER_BYTES:
            break
    return bytes(received)


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
