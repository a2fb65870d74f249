"""A webhook receiver on loopback: what `poller demo`, the integration tests and the soak send to.

It verifies Standard Webhooks signatures with the ``standardwebhooks`` package (the reference
implementation, so a signing bug cannot hide behind a shared helper), records every accepted
event, and can be told to fail: answer a status, fail a share of deliveries at random, or
be "down" (answer 503 to everything).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True, slots=True)
class Received:
    """One accepted delivery."""

    path: str
    webhook_id: str
    event_type: str
    body: dict[str, Any]
    signed: bool
    raw: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class ReceiverState:
    secret: str | None = None
    status: int = 204
    fail_rate: float = 0.0
    fail_status: int = 503
    retry_after: str | None = None
    fail_next: int = 0  # answer this many next deliveries with fail_status, then recover
    seed: int = 0
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    rejected_signatures: int = 0
    on_event: Callable[[Received], None] | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def roll_failure(self) -> bool:
        if self.fail_next > 0:
            self.fail_next -= 1
            return True
        return self.fail_rate > 0 and self._rng.random() < self.fail_rate


class Receiver:
    """The aiohttp application; ``state`` is shared with whoever drives it."""

    def __init__(self, state: ReceiverState | None = None) -> None:
        self.state = state or ReceiverState()
        self.app = web.Application()
        self.app.router.add_post("/_recv/mode", self._mode)
        self.app.router.add_get("/_recv/events", self._events)
        self.app.router.add_post("/{path:.*}", self._deliver)

    async def _deliver(self, request: web.Request) -> web.Response:
        s = self.state
        s.attempts += 1
        raw = await request.read()
        if s.status >= 300:
            return self._failure(s.status)
        if s.roll_failure():
            return self._failure(s.fail_status)
        signed = False
        if s.secret is not None:
            try:
                Webhook(s.secret).verify(raw, dict(request.headers))
            except WebhookVerificationError:
                s.rejected_signatures += 1
                return web.Response(status=401, text="bad signature")
            signed = True
        try:
            body = json.loads(raw)
        except ValueError:
            return web.Response(status=400, text="not JSON")
        item = Received(
            path="/" + request.match_info["path"],
            webhook_id=request.headers.get("webhook-id", ""),
            event_type=str(body.get("type")),
            body=body,
            signed=signed,
            raw=raw,
            headers=tuple((k.lower(), v) for k, v in request.headers.items()),
        )
        s.received.append(item)
        if s.on_event is not None:
            s.on_event(item)
        return web.Response(status=s.status if s.status < 300 else 204)

    def _failure(self, status: int) -> web.Response:
        headers = {"Retry-After": self.state.retry_after} if self.state.retry_after else None
        return web.Response(status=status, text="receiver failing on purpose", headers=headers)

    async def _mode(self, request: web.Request) -> web.Response:
        body = await request.json()
        for key in ("status", "fail_rate", "fail_status", "retry_after", "fail_next"):
            if key in body:
                setattr(self.state, key, body[key])
        return web.json_response({"ok": True})

    async def _events(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {"path": r.path, "webhook_id": r.webhook_id, "type": r.event_type, "body": r.body}
                for r in self.state.received
            ]
        )


class RunningReceiver:
    def __init__(self, runner: web.AppRunner, receiver: Receiver, port: int, host: str) -> None:
        self._runner = runner
        self.receiver = receiver
        self.port = port
        self.base_url = f"http://{host}:{port}"

    @property
    def state(self) -> ReceiverState:
        return self.receiver.state

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_receiver(
    host: str = "127.0.0.1", port: int = 0, state: ReceiverState | None = None
) -> RunningReceiver:
    receiver = Receiver(state)
    runner = web.AppRunner(receiver.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = next(int(address[1]) for address in runner.addresses if isinstance(address, tuple))
    return RunningReceiver(runner, receiver, bound, host)


class ReceiverThread:
    """Run a receiver on its own loop in a thread (for tests driving a daemon subprocess)."""

    def __init__(self, state: ReceiverState | None = None, port: int = 0) -> None:
        self.state = state or ReceiverState()
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._running: RunningReceiver | None = None

    def __enter__(self) -> ReceiverThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            start_receiver(port=self._port, state=self.state), self._loop
        )
        self._running = future.result(timeout=10)
        return self

    @property
    def port(self) -> int:
        assert self._running is not None
        return self._running.port

    @property
    def base_url(self) -> str:
        assert self._running is not None
        return self._running.base_url

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the receiver's loop (to read or change its state safely)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def received(self) -> list[Received]:
        return list(self.call(lambda: list(self.state.received)))

    def __exit__(self, *exc: object) -> None:
        if self._running is not None:
            asyncio.run_coroutine_threadsafe(self._running.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
