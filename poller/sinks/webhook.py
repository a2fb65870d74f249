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

HTTP (the transport, the user agent, the bounded read, what a status means) is
:mod:`poller.http`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import structlog
from standardwebhooks.webhooks import Webhook

from poller.config import WebhookSinkConfig
from poller.errors import (
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.events import Event
from poller.http.body import Answer, read_answer
from poller.http.failures import HttpFailure, TimedOut, answer_within
from poller.http.status import StatusClass, classify, retry_after
from poller.http.transport import USER_AGENT, basic_auth, pooled_transport, timeout_extensions
from poller.observe.metrics import SINK_RATE_LIMITED

if TYPE_CHECKING:
    import jinja2

log = structlog.get_logger(__name__)

# Read at most this much of an answer: enough to log and to keep a pooled connection reusable,
# never so much that a misbehaving receiver can fill memory.
_MAX_ANSWER_BYTES = 64 * 1024
_LOGGED_ANSWER_CHARS = 200
# httpx's own defaults; the dispatcher bounds how many sends are in flight (delivery.concurrency).
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
_RETRYABLE = frozenset(
    {StatusClass.RATE_LIMITED, StatusClass.RETRY_LATER, StatusClass.SERVER_ERROR}
)


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
            transport = pooled_transport(POOL_LIMITS, verify=url.scheme == "https")
        self._transport = transport
        self._url = url.copy_with(userinfo=b"")
        self._extensions = timeout_extensions(config.timeout_seconds)
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
            self._fixed_headers["authorization"] = basic_auth(url.username, url.password)

    async def send(self, event: Event) -> None:
        """POST ``event``; raise a ``DeliveryError`` subclass unless the receiver took it."""
        body = self._body(event)
        now = self._clock()
        headers = self._headers(event.id, int(now), body)
        request = httpx.Request(
            "POST", self._url, content=body, headers=headers, extensions=self._extensions
        )
        timeout = self._config.timeout_seconds
        try:
            async with answer_within(timeout):
                response = await self._transport.handle_async_request(request)
                answer = await read_answer(response, _MAX_ANSWER_BYTES, cut=True)
        except HttpFailure as exc:  # no answer, or one whose body does not inflate
            what = (
                f"no answer within {timeout:g} s"
                if isinstance(exc, TimedOut)
                else "transport failure"
            )
            raise RetryableDeliveryError(
                f"webhook sink {self.name!r}: {what} ({exc.reason})"
            ) from exc.__cause__
        self._classify(answer, now)

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

    def _classify(self, answer: Answer, now: float) -> None:
        status = answer.status_code
        meaning = classify(status)
        if meaning is StatusClass.SUCCESS:
            return
        log.debug("webhook_answer", sink=self.name, status=status, answer=_start_of(answer))
        what = f"webhook sink {self.name!r}: receiver answered HTTP {status}"
        if meaning is StatusClass.REDIRECT:
            log.warning("webhook_redirect_not_followed", sink=self.name, status=status)
            raise RetryableDeliveryError(
                f"{what} (a redirect; redirects are not followed, configure the final URL)",
                status=status,
            )
        if meaning is StatusClass.GONE:
            raise SinkDisabledError(f"{what} (Gone: the receiver asked to stop)", status=status)
        if meaning is StatusClass.RATE_LIMITED:
            SINK_RATE_LIMITED.labels(sink=self.name).inc()
        if meaning in _RETRYABLE:
            wait = retry_after(answer.headers, now)
            raise RetryableDeliveryError(what, status=status, retry_after=wait)
        if meaning is StatusClass.CLIENT_ERROR:
            raise PermanentDeliveryError(f"{what} (the event will not be retried)", status=status)
        raise RetryableDeliveryError(f"{what} (unexpected status)", status=status)


def _start_of(answer: Answer) -> str:
    """The start of the answer, for debug logs."""
    start = answer.content[: _LOGGED_ANSWER_CHARS * 4]
    return start.decode(errors="replace")[:_LOGGED_ANSWER_CHARS]
