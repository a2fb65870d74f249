"""The webhook sink: one signed ``POST`` per event (Standard Webhooks v1).

How an answer is classified (the dispatcher decides what happens next):

    2xx                          success
    3xx                          RetryableDeliveryError (redirects are never followed)
    410 Gone                     SinkDisabledError: the receiver asked never to be called again
    408, 425, 429, 5xx           RetryableDeliveryError, with the receiver's ``Retry-After``
    any other 4xx                PermanentDeliveryError: dead-letter the event
    timeout, transport failure   RetryableDeliveryError
    body_template fails          PermanentDeliveryError (before sending: the event is kept)

With ``body_template`` the body is that template rendered in the sandbox (it must be JSON;
the config checks it against a sample of every event type it takes) and sent with
``content_type``; the signature covers exactly the bytes sent.

Errors and logs name the sink and the status, never the secret, the URL or a body; the
receiver's answer is logged at debug level only, cut to 200 characters.

Requests go over ``httpx_aiohttp.AiohttpTransport`` unless a transport is injected (tests):
httpx's own async transport costs about twice the CPU per request (bench/bench_delivery.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiohttp
import httpx
import structlog
from httpx_aiohttp import AiohttpTransport
from standardwebhooks.webhooks import Webhook

from poller import __version__
from poller.backoff import parse_retry_after
from poller.config import WebhookSinkConfig
from poller.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.events import Event

if TYPE_CHECKING:
    import jinja2

log = structlog.get_logger(__name__)

USER_AGENT = f"twilio-proxy-poller/{__version__}"
RETRYABLE_4XX = frozenset({408, 425, 429})
# Read at most this much of an answer: enough to log and to keep a pooled connection reusable,
# never so much that a misbehaving receiver can fill memory.
_MAX_ANSWER_BYTES = 64 * 1024
_LOGGED_ANSWER_CHARS = 200
# httpx's own defaults; the dispatcher bounds how many sends are in flight (delivery.concurrency).
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
# A request that got no answer. httpx-aiohttp leaves a few aiohttp exceptions untranslated
# (a malformed answer), and TimeoutError is the whole-request bound's.
NO_ANSWER_ERRORS = (httpx.RequestError, aiohttp.ClientError, TimeoutError)


def encode_body(event: Event, *, include_data: bool) -> bytes:
    """Return the contract body of ``event``: compact UTF-8 JSON."""
    payload = event.payload(include_data=include_data)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookSink:
    """Deliver events to one HTTP receiver over a pooled transport."""

    digest_threshold: int | None = None

    def __init__(
        self,
        config: WebhookSinkConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.include_data = config.include_data
        self._config = config
        self._clock = clock
        self._signer = (
            Webhook(config.secret.get_secret_value()) if config.secret is not None else None
        )
        # Requests go to the transport itself, not through an httpx.AsyncClient: a sink posts
        # to one fixed URL, with no cookies, auth, proxies or redirects (never followed), and
        # the client's work for those, its cookie jar above all, cost a fifth of the sender's
        # CPU (bench_delivery).
        url = httpx.URL(config.url)
        if transport is None:
            # A plain-http receiver needs no TLS context (loading the CA bundle costs ~40 ms).
            transport = AiohttpTransport(limits=POOL_LIMITS, verify=url.scheme == "https")
        self._transport = transport
        self._url = url.copy_with(userinfo=b"")
        self._timeouts = httpx.Timeout(config.timeout_seconds).as_dict()
        self._template: jinja2.Template | None = None
        if config.body_template is not None:
            # Only sinks with a body_template pay for Jinja2 (bench_startup).
            from poller.sinks.templating import compile_sandboxed

            self._template = compile_sandboxed(config.body_template)
        self._content_type = config.content_type
        # Header names are case-insensitive: lower-case them so the config's never duplicate ours.
        self._fixed_headers = {"user-agent": USER_AGENT}
        self._fixed_headers.update((k.lower(), v) for k, v in config.headers.items())
        if url.userinfo:  # user:password@ in the URL means HTTP Basic, as httpx clients do it
            self._fixed_headers["authorization"] = _basic_auth(url.username, url.password)

    async def send(self, event: Event) -> None:
        """POST ``event``; raise a ``DeliveryError`` subclass unless the receiver took it."""
        body = self._body(event)
        now = self._clock()
        headers = self._headers(event.id, int(now), body)
        request = httpx.Request(
            "POST", self._url, content=body, headers=headers, extensions={"timeout": self._timeouts}
        )
        timeout = self._config.timeout_seconds
        try:
            # A whole-request bound: the transport's timeouts are per socket operation, so a
            # trickling answer could otherwise hold a delivery worker for ever.
            async with asyncio.timeout(timeout):
                response = await self._transport.handle_async_request(request)
                try:
                    answer = await _read_bounded(response)
                finally:
                    await response.aclose()
        except NO_ANSWER_ERRORS as exc:
            timed_out, kind = transport_failure(exc)
            what = f"no answer within {timeout:g} s" if timed_out else "transport failure"
            raise RetryableDeliveryError(f"webhook sink {self.name!r}: {what} ({kind})") from exc
        self._classify(response, answer, now)

    def _body(self, event: Event) -> bytes:
        if self._template is None:
            return encode_body(event, include_data=self.include_data)
        from poller.sinks.templating import render_json_body

        try:
            return render_json_body(self._template, event, include_data=self.include_data).encode()
        except Exception as exc:  # a user's template may raise anything: keep the event
            log.warning(
                "webhook_template_failed",
                sink=self.name,
                event_id=event.id,
                error=type(exc).__name__,
            )
            raise PermanentDeliveryError(
                f"webhook sink {self.name!r}: body_template failed for this event "
                f"({type(exc).__name__}); fix the template, then poller outbox retry"
            ) from exc

    async def send_digest(self, events: Sequence[Event]) -> None:
        """POST each event on its own, in order: a receiver gets events, never summaries.

        The dispatcher never asks (``digest_threshold`` is None); should anything else, the
        first refusal stops the rest, and they are all retried under their own ids.
        """
        for event in events:
            await self.send(event)

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        headers = self._fixed_headers.copy()
        headers["content-type"] = self._content_type
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(timestamp)
        if self._signer is not None:
            when = datetime.fromtimestamp(timestamp, tz=UTC)
            headers["webhook-signature"] = self._signer.sign(msg_id, when, body.decode())
        return headers

    def _classify(self, response: httpx.Response, answer: str, now: float) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        log.debug("webhook_answer", sink=self.name, status=status, answer=answer)
        what = f"webhook sink {self.name!r}: receiver answered HTTP {status}"
        if 300 <= status < 400:
            log.warning("webhook_redirect_not_followed", sink=self.name, status=status)
            raise RetryableDeliveryError(
                f"{what} (a redirect; redirects are not followed, configure the final URL)",
                status=status,
            )
        if status == 410:
            raise SinkDisabledError(f"{what} (Gone: the receiver asked to stop)", status=status)
        if status in RETRYABLE_4XX or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"), now)
            raise RetryableDeliveryError(what, status=status, retry_after=retry_after)
        if 400 <= status < 500:
            raise PermanentDeliveryError(f"{what} (the event will not be retried)", status=status)
        raise RetryableDeliveryError(f"{what} (unexpected status)", status=status)


def _basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def transport_failure(exc: BaseException) -> tuple[bool, str]:
    """Return (timed out?, the failure's type name) of a request that got no answer.

    httpx-aiohttp chains the aiohttp exception it translated, and that one says what happened:
    it maps every connection error to ``ConnectTimeout`` (a refused connection too).
    """
    cause = exc.__cause__
    actual = cause if isinstance(cause, aiohttp.ClientError) else exc
    return isinstance(actual, httpx.TimeoutException | TimeoutError), type(actual).__name__


async def _read_bounded(response: httpx.Response) -> str:
    """Read up to ``_MAX_ANSWER_BYTES`` of the answer; return its start for debug logs."""
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) >= _MAX_ANSWER_BYTES:
            break
    return received[: _LOGGED_ANSWER_CHARS * 4].decode(errors="replace")[:_LOGGED_ANSWER_CHARS]
