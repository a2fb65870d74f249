"""A Twilio Proxy that answers what the test tells it to, hostile answers included, on loopback.

One Service with one open session. The session's Interactions are answered by ``mode``:
``listing`` (the records in ``listing``), ``other_key`` (the same under a ``meta.key`` naming
another list), ``gzip_bomb`` (2 MB of gzip that inflates to 2 GiB), ``huge`` (a 500 MB body)
and ``endless`` (pages of 1,000 new interactions, each pointing at the next, for ever). The big
bodies are produced as they are sent (the bomb is one packed MiB repeated), never held whole.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

ACCOUNT = "AC" + "0" * 32
TOKEN = "hostile-token"
SERVICE = "KS" + "0" * 32
SESSION = "KC" + "0" * 32
FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).parent / "fixtures" / "interaction_fetch.json").read_text()
)
MIB = 1024 * 1024
GIB = 1024 * MIB
PAGE = 1_000


def interaction(sid: str, date_updated: str, outbound: str) -> dict[str, Any]:
    """An interaction with every field filled, as the fixture has them."""
    return {
        **FIXTURE,
        "sid": sid,
        "service_sid": SERVICE,
        "session_sid": SESSION,
        "account_sid": ACCOUNT,
        "date_updated": date_updated,
        "outbound_resource_status": outbound,
        "url": f"https://proxy.twilio.com/v1/Services/{SERVICE}/Sessions/{SESSION}/Interactions/{sid}",
    }


def _page(
    key: str, items: list[Any], next_page_url: str | None, meta_key: str | None = None
) -> Any:
    meta = {"key": meta_key or key, "next_page_url": next_page_url, "page_size": PAGE}
    return {key: items, "meta": meta}


class HostileTwilio:
    """The server's state; the test changes ``mode`` and ``listing`` between runs."""

    def __init__(self) -> None:
        self.mode = "listing"
        self.listing: list[dict[str, Any]] = []
        self.requests = 0
        self.sent_bytes = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"/v1/Services/{SERVICE}/Sessions", self._sessions)
        app.router.add_get(f"/v1/Services/{SERVICE}/Sessions/{SESSION}/Interactions", self._listing)
        return app

    async def _sessions(self, request: web.Request) -> web.Response:
        session = {"sid": SESSION, "service_sid": SERVICE, "status": "open"}
        return web.json_response(_page("sessions", [session], None))

    async def _listing(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "listing":
            return web.json_response(_page("interactions", self.listing, None))
        if self.mode == "other_key":
            body = _page("interactions", self.listing, None, meta_key="other")
            return web.json_response({**body, "other": []})
        if self.mode == "endless":
            return self._endless(int(request.query.get("Page", "0")))
        return await self._stream(request, gzip_bomb=self.mode == "gzip_bomb")

    def _endless(self, n: int) -> web.Response:
        items = [
            interaction(f"KI{n * PAGE + i:032x}", "2026-11-27T10:00:00Z", "sent")
            for i in range(PAGE)
        ]
        path = f"/v1/Services/{SERVICE}/Sessions/{SESSION}/Interactions"
        following = f"{path}?PageSize={PAGE}&Page={n + 1}&PageToken=PT{n + 1}"
        return web.json_response(_page("interactions", items, following))

    async def _stream(self, request: web.Request, *, gzip_bomb: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        # A gzip bomb: 2 GiB of JSON blanks in about 2 MB, with its length declared as a real
        # server would; otherwise 500 MB of them as they are, chunked.
        chunks = iter(gzip_bomb_chunks()) if gzip_bomb else _blank_body(500 * MIB)
        if gzip_bomb:
            response.headers["Content-Encoding"] = "gzip"
            response.content_length = sum(len(chunk) for chunk in gzip_bomb_chunks())
        await response.prepare(request)
        try:
            for chunk in chunks:
                self.sent_bytes += len(chunk)
                await response.write(chunk)
        except ConnectionError:
            pass  # the client stopped reading: what the test wants
        return response


_PREFIX = b'{"meta": {"key": "interactions", "next_page_url": null}, "interactions": ['


def _blank_body(total: int) -> Iterator[bytes]:
    """``total`` bytes in 1 MiB chunks: the page's opening, then blanks (JSON whitespace)."""
    blanks = b" " * MIB
    yield _PREFIX + blanks[len(_PREFIX) :]
    for _ in range(total // MIB - 1):
        yield blanks


@functools.cache
def gzip_bomb_chunks(total: int = 2 * GIB) -> list[bytes]:
    """A gzip body inflating to ``_blank_body(total)``, built without compressing it all.

    After a full flush deflate starts afresh, so every further MiB of blanks packs to the same
    bytes: one packed MiB is repeated, and the trailer's CRC-32 is computed over the blanks.
    """
    first, blanks = list(itertools.islice(_blank_body(total), 2))
    packer = zlib.compressobj(9, wbits=zlib.MAX_WBITS | 16)
    head = packer.compress(first) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(blanks) + packer.flush(zlib.Z_FULL_FLUSH)
    final = packer.flush()[:-8]  # the last (empty) block, without the trailer zlib wrote
    crc = zlib.crc32(first)
    for _ in range(total // MIB - 1):
        crc = zlib.crc32(blanks, crc)
    trailer = struct.pack("<II", crc, total & 0xFFFFFFFF)
    return [head, *([block] * (total // MIB - 1)), final + trailer]


class HostileTwilioThread:
    """Run a :class:`HostileTwilio` on its own loop in a thread, on 127.0.0.1."""

    def __init__(self) -> None:
        self.state = HostileTwilio()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def __enter__(self) -> HostileTwilioThread:
        self._thread.start()
        self.port = self._call(self._start)
        return self

    async def _start(self) -> int:
        self._runner = web.AppRunner(self.state.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        return int(server.sockets[0].getsockname()[1])

    def _call(self, fn: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout=30)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
