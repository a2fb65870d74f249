"""Talking to Slack: incoming webhooks and ``chat.postMessage``, paced, answers classified.

Every post waits its turn in a :class:`Pacer` (Slack allows about one message per second per
webhook or channel). How an answer is classified (the dispatcher decides what happens next;
"disabled" means :class:`SinkDisabledError`, as the message can never get through any more):

Incoming webhook (plain-text error body):

    2xx                                 success
    429                                 retry, after Slack's ``Retry-After``
    5xx (``rollup_error``, any body)    retry
    invalid_payload (400)               permanent: Slack could not read the message
    too_many_attachments (400)          permanent
    user_not_found (400)                permanent
    action_prohibited (403)             permanent: an admin restricts posting there
    posting_to_general_channel_denied   permanent: only admins may post in #general
    channel_not_found (404)             permanent: requeue with ``poller outbox retry`` once fixed
    channel_is_archived (410)           permanent: unarchive, then ``poller outbox retry``
    no_service (404)                    disabled: the webhook was removed or revoked
    no_service_id (400)                 disabled: the webhook URL is incomplete
    no_team (404)                       disabled: the workspace in the URL does not exist
    team_disabled (403)                 disabled: the workspace was disabled
    invalid_token (403)                 disabled: the token in the webhook URL is not valid
    other 410                           disabled (Gone)
    408, 425, 3xx (never followed)      retry
    other 4xx                           permanent
    timeout, transport failure          retry

Web API (``{"ok": false, "error": "..."}``, usually with HTTP 200):

    ok: true                            success (``ts`` returned for threads)
    ratelimited, HTTP 429               retry, after Slack's ``Retry-After``
    HTTP 5xx, internal_error, ...       retry
    channel_not_found, not_in_channel,  permanent
    is_archived, msg_too_long, no_text,
    invalid_blocks(_format), invalid_arguments, too_many_attachments, restricted_action
    invalid_auth, not_authed,           disabled: the token no longer works
    account_inactive, token_revoked, token_expired, missing_scope
    any other error                     retry (Slack adds errors; an unknown one may pass)
    a 2xx answer that is not JSON       retry

Permanent channel errors are dead letters rather than a disabled sink so that the events are
kept and can be requeued; revoked credentials disable the sink, because every later message
would fail the same way. Errors and logs name the sink, the status and Slack's error code, never
the webhook URL, the token or a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import httpx
import structlog

from poller.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.http.body import Answer, read_answer
from poller.http.failures import HttpFailure, TimedOut, answer_within
from poller.http.status import StatusClass, classify, retry_after
from poller.http.transport import async_client
from poller.observe.metrics import SINK_RATE_LIMITED

if TYPE_CHECKING:
    from poller.sinks import PaceStore

log = structlog.get_logger(__name__)

Outcome = Literal["retry", "permanent", "disabled"]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

MESSAGE_INTERVAL_SECONDS = 1.0
MAX_WAIT_SECONDS = 5.0
_MAX_ANSWER_BYTES = 1024 * 1024
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
# Posts are paced one at a time, so a small pool is plenty.
POOL_LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=2)

WEBHOOK_ERRORS: Mapping[str, tuple[Outcome, str]] = {
    "invalid_payload": ("permanent", "Slack could not read the message; it is dead-lettered"),
    "too_many_attachments": ("permanent", "the message has more attachments than Slack allows"),
    "user_not_found": ("permanent", "the user the webhook posts to does not exist"),
    "action_prohibited": (
        "permanent",
        "a workspace admin restricts posting in this channel; ask them, then requeue",
    ),
    "posting_to_general_channel_denied": (
        "permanent",
        "only admins may post in #general; point the webhook at another channel",
    ),
    "channel_not_found": (
        "permanent",
        "the webhook's channel does not exist; create a webhook for an existing channel",
    ),
    "channel_is_archived": (
        "permanent",
        "the channel was archived; unarchive it or point the webhook elsewhere, then requeue",
    ),
    "no_service": (
        "disabled",
        "the webhook was removed or revoked, or its URL is wrong; create a new one",
    ),
    "no_service_id": ("disabled", "the webhook URL is incomplete; copy it again from Slack"),
    "no_team": ("disabled", "the workspace in the webhook URL does not exist any more"),
    "team_disabled": ("disabled", "the Slack workspace was disabled"),
    "invalid_token": ("disabled", "the token in the webhook URL is not valid (revoked?)"),
}

API_ERRORS: Mapping[str, tuple[Outcome, str]] = {
    "ratelimited": ("retry", "Slack rate-limits this app; the message waits its turn"),
    "internal_error": ("retry", "Slack had an internal error"),
    "fatal_error": ("retry", "Slack had an internal error"),
    "service_unavailable": ("retry", "Slack is unavailable"),
    "request_timeout": ("retry", "Slack timed out"),
    "channel_not_found": ("permanent", "the channel does not exist or the app cannot see it"),
    "not_in_channel": ("permanent", "invite the app to the channel (/invite), then requeue"),
    "is_archived": ("permanent", "the channel was archived; unarchive it, then requeue"),
    "msg_too_long": ("permanent", "Slack found the message too long"),
    "no_text": ("permanent", "Slack found the message empty"),
    "invalid_blocks": ("permanent", "Slack rejected the message's blocks"),
    "invalid_blocks_format": ("permanent", "Slack rejected the message's blocks"),
    "invalid_arguments": ("permanent", "Slack rejected the request's arguments"),
    "too_many_attachments": ("permanent", "the message has more attachments than Slack allows"),
    "restricted_action": ("permanent", "a workspace preference forbids the app to post there"),
    "invalid_auth": ("disabled", "the token is not valid; set a new one"),
    "not_authed": ("disabled", "no token reached Slack; set one"),
    "account_inactive": ("disabled", "the token's user or workspace was deleted"),
    "token_revoked": ("disabled", "the token was revoked; set a new one"),
    "token_expired": ("disabled", "the token expired; set a new one"),
    "missing_scope": ("disabled", "the token lacks the chat:write scope"),
}


class Pacer:
    """Let callers through at most once per ``interval`` seconds of ``clock``, in turn.

    A caller never sleeps longer than ``max_wait``: when Slack asked for a longer pause
    (``Retry-After``), :meth:`wait` returns the time left instead, so a delivery worker is not
    held for minutes and the dispatcher schedules the retry.
    """

    def __init__(
        self,
        interval: float,
        *,
        clock: Clock,
        sleep: Sleep,
        max_wait: float = MAX_WAIT_SECONDS,
        on_change: Callable[[float], None] | None = None,
    ) -> None:
        self._interval = interval
        self._max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self.on_change = on_change
        self._lock = asyncio.Lock()
        self._next = float("-inf")

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[float]:
        """Hold the turn for one post; the next starts ``interval`` after this one ENDS.

        Slack stamps a message before it answers, so counting from the answer (not from when
        the request left) keeps a slow request from bringing the next one within the second.
        """
        async with self._lock:
            delay = self._next - self._clock()
            if delay > self._max_wait:
                yield delay
                return
            if delay > 0:
                await self._sleep(delay)
            try:
                yield 0.0
            finally:
                self.hold_off(self._interval)

    def hold_off(self, seconds: float) -> None:
        """Let nobody through for ``seconds`` from now (Slack said ``Retry-After``).

        ``on_change`` hears the seconds left whenever that moves the next turn later.
        """
        later = self._clock() + seconds
        if later > self._next:
            self._next = later
            if self.on_change is not None:
                self.on_change(seconds)


class SlackClient:
    """HTTP to Slack for one sink: every post paced, every failure a ``DeliveryError``."""

    def __init__(
        self,
        sink: str,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
        clock: Clock,
        sleep: Sleep,
        interval: float = MESSAGE_INTERVAL_SECONDS,
        pace_store: PaceStore | None = None,
        wall: Clock = time.time,
    ) -> None:
        self._sink = sink
        self._timeout = timeout
        self._pacer = Pacer(interval, clock=clock, sleep=sleep)
        self._pace_store = pace_store
        self._wall = wall
        # Read from the state before the first post; what the pacer decides is kept after each.
        self._pace_resumed = pace_store is None
        self._resume_lock = asyncio.Lock()
        self._pace_to_keep: tuple[float, float] | None = None
        if pace_store is not None:
            self._pacer.on_change = self._note_pace
        self._client = async_client(transport, timeout=timeout, limits=POOL_LIMITS)

    @contextlib.asynccontextmanager
    async def _kept_pace(self) -> AsyncIterator[None]:
        """Around one post: resume an earlier run's pace first, keep ours in the state after."""
        store = self._pace_store
        if store is None:
            yield
            return
        if not self._pace_resumed:
            # Posts that start together all wait for the one read of the kept pace (a state
            # that awaits real I/O would otherwise let the second post in before it is known).
            async with self._resume_lock:
                if not self._pace_resumed:
                    await self._resume_pace(store)
                    self._pace_resumed = True
        try:
            yield
        finally:
            kept, self._pace_to_keep = self._pace_to_keep, None
            if kept is not None:
                await store.set_sink_pace(self._sink, not_before=kept[0], now=kept[1])

    async def _resume_pace(self, store: PaceStore) -> None:
        """Wait out what an earlier run left (its last post, Slack's pause)."""
        kept = await store.sink_pace(self._sink)
        now = self._wall()
        if kept is not None:
            not_before, set_at = kept
            # Never more than was asked when it was kept, should the wall clock step back.
            left = min(not_before - now, not_before - set_at)
            if left > 0:
                self._pacer.hold_off(left)
                log.debug("slack_pace_resumed", sink=self._sink, wait_seconds=round(left, 3))

    def _note_pace(self, seconds: float) -> None:
        at = self._wall()
        self._pace_to_keep = (at + seconds, at)

    async def post_webhook(self, url: str, message: Mapping[str, Any]) -> None:
        """POST ``message`` to an incoming webhook; raise unless Slack took it."""
        async with self._kept_pace():
            await self._post_webhook(url, message)

    async def _post_webhook(self, url: str, message: Mapping[str, Any]) -> None:
        answer = await self._post(url, message, headers={})
        if answer.is_success:
            return
        code = _error_code(answer.content.decode(errors="replace").strip())
        raise self._failure(answer, code, WEBHOOK_ERRORS.get(code or ""))

    async def post_message(
        self, url: str, token: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """POST ``body`` to ``chat.postMessage``; return Slack's answer when ``ok`` is true."""
        async with self._kept_pace():
            return await self._post_message(url, token, body)

    async def _post_message(
        self, url: str, token: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        headers = {"authorization": f"Bearer {token}"}
        answer = await self._post(url, body, headers=headers)
        try:
            parsed = json.loads(answer.content)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            code = None
        elif parsed.get("ok") is True and answer.is_success:
            return parsed
        else:
            code = _error_code(str(parsed.get("error", "")))
        known = API_ERRORS.get(code or "")
        if known is None and code is not None and answer.status_code < 300:
            known = ("retry", "Slack answered an error this version does not know")
        if known is None and answer.status_code < 300:
            known = ("retry", "Slack's answer was not the JSON of chat.postMessage")
        raise self._failure(answer, code, known)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(
        self, url: str, payload: Mapping[str, Any], *, headers: Mapping[str, str]
    ) -> Answer:
        content = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        all_headers = {"content-type": "application/json; charset=utf-8", **headers}
        async with self._pacer.turn() as held:
            if held:
                raise RetryableDeliveryError(
                    f"slack sink {self._sink!r}: Slack asked for a pause, {held:.0f} s left",
                    retry_after=held,
                )
            return await self._send(url, content, all_headers)

    async def _send(self, url: str, content: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            # Only the transport's per-operation timeouts bound a post to Slack.
            async with (
                answer_within(None),
                self._client.stream("POST", url, content=content, headers=headers) as response,
            ):
                return await read_answer(response, _MAX_ANSWER_BYTES, cut=True)
        except TimedOut as exc:
            log.warning("slack_timeout", sink=self._sink, timeout_seconds=self._timeout)
            raise RetryableDeliveryError(
                f"slack sink {self._sink!r}: no answer within {self._timeout:g} s ({exc.reason})"
            ) from exc.__cause__
        except HttpFailure as exc:  # no answer, or one whose body does not inflate
            log.warning("slack_transport_error", sink=self._sink, error=exc.reason)
            raise RetryableDeliveryError(
                f"slack sink {self._sink!r}: transport failure ({exc.reason})"
            ) from exc.__cause__

    def _failure(
        self, answer: Answer, code: str | None, known: tuple[Outcome, str] | None
    ) -> DeliveryError:
        status = answer.status_code
        status_class = classify(status)
        wait = None
        outcome: Outcome
        if status_class is StatusClass.RATE_LIMITED or code == "ratelimited":
            SINK_RATE_LIMITED.labels(sink=self._sink).inc()
            wait = retry_after(answer.headers, time.time())
            self._pacer.hold_off(MESSAGE_INTERVAL_SECONDS if wait is None else wait)
            outcome, meaning = "retry", "Slack rate-limits this sink; the message waits its turn"
        elif status_class is StatusClass.SERVER_ERROR:
            outcome, meaning = "retry", "Slack had a server error"
        else:
            outcome, meaning = known or _by_status(status)
        log.warning(
            "slack_delivery_failed",
            sink=self._sink,
            status=status,
            error=code,
            outcome=outcome,
            meaning=meaning,
        )
        what = f"slack sink {self._sink!r}: Slack answered HTTP {status}"
        what += f" {code}" if code else ""
        what += f" ({meaning})"
        if outcome == "disabled":
            return SinkDisabledError(what, status=status)
        if outcome == "permanent":
            return PermanentDeliveryError(what, status=status)
        return RetryableDeliveryError(what, status=status, retry_after=wait)


def _by_status(status: int) -> tuple[Outcome, str]:
    meaning = classify(status)
    if meaning is StatusClass.GONE:
        return "disabled", "Gone: Slack asked never to be called at this URL again"
    if meaning in (StatusClass.RETRY_LATER, StatusClass.REDIRECT):
        return "retry", "an answer that may change (redirects are never followed)"
    if meaning is StatusClass.CLIENT_ERROR:
        return "permanent", "Slack refused the message"
    return "retry", "an unexpected answer"


def _error_code(text: str) -> str | None:
    """Return Slack's error code when ``text`` is one (safe to log), else None."""
    return text if _ERROR_CODE.fullmatch(text) else None
