"""A fake Slack on 127.0.0.1: incoming webhooks and ``chat.postMessage``, as strict as Slack.

It serves ``POST /services/...`` (one incoming webhook per registered path) and
``POST /api/chat.postMessage`` (Bearer token, one channel per ``channel`` value), and:

- enforces at most one message per ``interval`` seconds per webhook and per channel, answering
  429 with ``Retry-After: 1`` (``{"ok": false, "error": "ratelimited"}`` for the Web API);
- rejects messages breaking Block Kit's limits (:func:`validate_message`): ``400
  invalid_payload`` from a webhook, ``{"ok": false, "error": "invalid_blocks"}`` from the API;
- answers ``404 no_service`` for an unknown webhook path, ``invalid_auth`` for a wrong token,
  ``thread_not_found`` for a ``thread_ts`` it never gave out;
- records every accepted message (:attr:`FakeSlack.accepted`) and every refusal
  (:attr:`FakeSlack.rejected`), and can be told to answer errors (:meth:`FakeSlack.fail_webhook`,
  :meth:`FakeSlack.fail_api`).

Time: the rate limit reads ``clock`` (``time.monotonic`` by default). To run hundreds of paced
messages in a test, hand the fake and the sink the same :class:`tests.clock.FakeClock`
(``clock=clock.monotonic``, ``sleep=clock.sleep``): the sink's pacer "sleeps" by advancing it,
the fake measures the gaps on it, and no real second passes.

In-process tests ``await fake.start()`` (or ``async with FakeSlack() as fake``); a test that runs
the daemon in a subprocess uses :func:`fake_slack_in_thread`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT = 40_000
TOKEN = "xoxb-fake-0000-token"
WEBHOOK_PATH = "/services/T0000FAKE/B0000FAKE/fakewebhooksecret0001"


@dataclass(frozen=True)
class Posted:
    """One message the fake accepted."""

    kind: str  # "webhook" or "api"
    target: str  # the webhook path, or the channel
    payload: Mapping[str, Any]
    at: float
    ts: str | None = None
    thread_ts: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejected:
    """One request the fake refused, and why (``ratelimited``, a limit broken, a scripted error)."""

    kind: str
    target: str
    reason: str
    at: float


@dataclass(frozen=True)
class _Failure:
    status: int
    body: str
    retry_after: str | None


def _text_object(obj: object, where: str, limit: int, kinds: tuple[str, ...]) -> str | None:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return f"{where}: expected a text object of type {' or '.join(kinds)}"
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        return f"{where}: text must be 1 to {limit} characters"
    return None


def _validate_block(block: object, where: str) -> str | None:
    if not isinstance(block, dict):
        return f"{where}: expected an object"
    block_id = block.get("block_id")
    if block_id is not None and (not isinstance(block_id, str) or len(block_id) > 255):
        return f"{where}.block_id: at most 255 characters"
    kind = block.get("type")
    if kind == "divider":
        return None
    if kind == "header":
        return _text_object(block.get("text"), f"{where}.text", MAX_HEADER_TEXT, ("plain_text",))
    if kind == "section":
        return _validate_section(block, where)
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
            return f"{where}.elements: 1 to {MAX_CONTEXT_ELEMENTS} elements"
        for index, element in enumerate(elements):
            problem = _text_object(
                element, f"{where}.elements[{index}]", MAX_SECTION_TEXT, ("mrkdwn", "plain_text")
            )
            if problem:
                return problem
        return None
    return f"{where}: unknown block type {kind!r}"


def _validate_section(block: Mapping[str, Any], where: str) -> str | None:
    text, fields = block.get("text"), block.get("fields")
    if text is None and fields is None:
        return f"{where}: a section needs text or fields"
    if text is not None:
        problem = _text_object(text, f"{where}.text", MAX_SECTION_TEXT, ("mrkdwn", "plain_text"))
        if problem:
            return problem
    if fields is not None:
        if not isinstance(fields, list) or not 1 <= len(fields) <= MAX_FIELDS:
            return f"{where}.fields: 1 to {MAX_FIELDS} fields"
        for index, item in enumerate(fields):
            problem = _text_object(
                item, f"{where}.fields[{index}]", MAX_FIELD_TEXT, ("mrkdwn", "plain_text")
            )
            if problem:
                return problem
    return None


def validate_message(payload: object) -> str | None:
    """Return why Slack would refuse ``payload``, or None when it is a valid message."""
    if not isinstance(payload, dict):
        return "expected a JSON object"
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        return "text: a non-empty fallback text is required"
    if len(text) > MAX_TEXT:
        return f"text: at most {MAX_TEXT} characters"
    blocks = payload.get("blocks")
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return f"blocks: a list of at most {MAX_BLOCKS} blocks"
    for index, block in enumerate(blocks):
        problem = _validate_block(block, f"blocks[{index}]")
        if problem:
            return problem
    return None


class FakeSlack:
    """A strict fake Slack; see the module docstring."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
        token: str = TOKEN,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.token = token
        self.accepted: list[Posted] = []
        self.rejected: list[Rejected] = []
        self._webhooks = {WEBHOOK_PATH}
        self._last_post: dict[tuple[str, str], float] = {}
        self._webhook_failures: deque[_Failure] = deque()
        self._api_failures: deque[_Failure] = deque()
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", self._post_message)
        app.router.add_post("/services/{rest:.+}", self._webhook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def webhook_url(self) -> str:
        return self.base_url + WEBHOOK_PATH

    @property
    def api_base_url(self) -> str:
        return self.base_url + "/api"

    def add_webhook(self, name: str) -> str:
        """Register another incoming webhook (with a rate limit of its own); return its URL."""
        path = f"/services/T0000FAKE/B{name}/secret{name}"
        self._webhooks.add(path)
        return self.base_url + path

    # -- scripting ---------------------------------------------------------------------------

    def fail_webhook(
        self, status: int, body: str, *, retry_after: str | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` webhook posts with ``status`` and a plain-text ``body``."""
        self._webhook_failures.extend([_Failure(status, body, retry_after)] * times)

    def fail_api(
        self,
        error: str,
        *,
        status: int = 200,
        retry_after: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` API calls with ``{"ok": false, "error": error}``."""
        body = json.dumps({"ok": False, "error": error})
        self._api_failures.extend([_Failure(status, body, retry_after)] * times)

    def thread_of(self, ts: str) -> list[Posted]:
        """Return the accepted replies in the thread started by the message ``ts``."""
        return [post for post in self.accepted if post.thread_ts == ts]

    # -- handlers ----------------------------------------------------------------------------

    def _reject(self, kind: str, target: str, reason: str) -> None:
        self.rejected.append(Rejected(kind, target, reason, self.clock()))

    def _too_soon(self, kind: str, target: str) -> bool:
        last = self._last_post.get((kind, target))
        return last is not None and self.clock() - last < self.interval

    async def _webhook(self, request: web.Request) -> web.Response:
        path = request.path
        if self._webhook_failures:
            failure = self._webhook_failures.popleft()
            self._reject("webhook", path, f"scripted {failure.status} {failure.body}")
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
            return web.Response(status=failure.status, text=failure.body, headers=headers)
        if path not in self._webhooks:
            self._reject("webhook", path, "no_service")
            return web.Response(status=404, text="no_service")
        try:
            payload = json.loads(await request.read())
        except ValueError:
            self._reject("webhook", path, "invalid JSON")
            return web.Response(status=400, text="invalid_payload")
        problem = validate_message(payload)
        if problem:
            self._reject("webhook", path, problem)
            return web.Response(status=400, text="invalid_payload")
        if self._too_soon("webhook", path):
            self._reject("webhook", path, "ratelimited")
            return web.Response(status=429, text="rate_limited", headers={"Retry-After": "1"})
        self._last_post["webhook", path] = self.clock()
        self.accepted.append(Posted("webhook", path, payload, self.clock()))
        return web.Response(text="ok")

    async def _post_message(self, request: web.Request) -> web.Response:
        if self._api_failures:
            failure = self._api_failures.popleft()
            self._reject("api", "", f"scripted {failure.status} {failure.body}")
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else None
            return web.Response(
                status=failure.status,
                text=failure.body,
                headers=headers,
                content_type="application/json",
            )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._api_error("", "invalid_auth")
        try:
            payload = json.loads(await request.read())
        except ValueError:
            return self._api_error("", "invalid_json")
        channel = payload.get("channel") if isinstance(payload, dict) else None
        if not isinstance(channel, str) or not channel:
            return self._api_error("", "channel_not_found")
        problem = validate_message(payload)
        if problem:
            return self._api_error(channel, "invalid_blocks", reason=problem)
        thread_ts = payload.get("thread_ts")
        if thread_ts is not None and not any(
            post.ts == thread_ts and post.target == channel and post.thread_ts is None
            for post in self.accepted
        ):
            return self._api_error(channel, "thread_not_found")
        if self._too_soon("api", channel):
            return self._api_error(channel, "ratelimited", status=429, retry_after="1")
        self._last_post["api", channel] = self.clock()
        ts = f"{1_700_000_000 + next(self._ts)}.000100"
        headers = {"authorization": request.headers.get("Authorization", "")}
        self.accepted.append(
            Posted("api", channel, payload, self.clock(), ts, thread_ts, headers=headers)
        )
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "message": payload})

    def _api_error(
        self,
        channel: str,
        error: str,
        *,
        status: int = 200,
        retry_after: str | None = None,
        reason: str | None = None,
    ) -> web.Response:
        self._reject("api", channel, reason or error)
        headers = {"Retry-After": retry_after} if retry_after else None
        return web.json_response({"ok": False, "error": error}, status=status, headers=headers)


@contextmanager
def fake_slack_in_thread(**kwargs: Any) -> Iterator[FakeSlack]:
    """Run a :class:`FakeSlack` on an event loop of its own thread (for subprocess daemons)."""
    loop = asyncio.new_event_loop()
    fake = FakeSlack(**kwargs)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="fake-slack", daemon=True)
    thread.start()
    if not ready.wait(timeout=10):
        raise RuntimeError("the fake Slack did not start within 10 s")
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
