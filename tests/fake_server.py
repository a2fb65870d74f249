"""What the fake chat services share: an aiohttp app on 127.0.0.1, scripted failures, a thread.

A subclass adds its routes in :meth:`FakeServer.routes`; tests ``await fake.start()`` (or
``async with``), or run it on a loop of its own thread with :func:`in_thread` when the daemon
or the CLI runs in a subprocess.
"""

from __future__ import annotations

import asyncio
import json as json_module  # `json` is also a parameter name of FakeServer.answer
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from aiohttp import web


@dataclass(frozen=True)
class Scripted:
    """One answer a test asked for, given instead of the real one."""

    status: int
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    json: bool = True


@dataclass(frozen=True)
class Received:
    """One request that reached the fake, with its decoded JSON (None when it was not JSON)."""

    path: str
    query: Mapping[str, str]
    raw: bytes
    payload: Any
    status: int  # what the fake answered
    reason: str  # why, in a few words ("accepted", "too large", "scripted")


class FakeServer:
    """An aiohttp server on a free port of 127.0.0.1; see the module docstring."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: deque[Scripted] = deque()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    @property
    def rejected(self) -> list[Received]:
        return [r for r in self.received if not 200 <= r.status < 300]

    def fail(
        self,
        status: int,
        body: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        json: bool = True,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and ``body``."""
        self._script.extend([Scripted(status, body, dict(headers or {}), json)] * times)

    def scripted(self) -> Scripted | None:
        return self._script.popleft() if self._script else None

    async def take(self, request: web.Request) -> tuple[bytes, Any, web.Response | None]:
        """Read a post: its bytes, its JSON (None: not JSON), and the scripted answer if any."""
        raw = await request.read()
        try:
            payload = json_module.loads(raw)
        except ValueError:
            payload = None
        scripted = self.scripted()
        if scripted is None:
            return raw, payload, None
        answer = self.answer(
            request, raw, payload, scripted.status, "scripted",
            body=scripted.body, headers=scripted.headers, json=scripted.json,
        )  # fmt: skip
        return raw, payload, answer

    def answer(
        self,
        request: web.Request,
        raw: bytes,
        payload: Any,
        status: int,
        reason: str,
        *,
        body: str = "",
        headers: Mapping[str, str] | None = None,
        json: bool = True,
    ) -> web.Response:
        """Record the request and return the answer."""
        query = dict(request.query)
        self.received.append(Received(request.path, query, raw, payload, status, reason))
        content_type = "application/json" if json and body else "text/plain"
        return web.Response(
            status=status, text=body, headers=dict(headers or {}), content_type=content_type
        )

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


F = TypeVar("F", bound=FakeServer)


@contextmanager
def in_thread(fake: F) -> Iterator[F]:
    """Run ``fake`` on an event loop of its own thread (for subprocess daemons and the CLI)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name=type(fake).__name__, daemon=True)
    thread.start()
    if not ready.wait(timeout=10):
        raise RuntimeError("the fake did not start within 10 s")
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
