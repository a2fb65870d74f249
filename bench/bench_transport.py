"""CPU cost of fetching and parsing Twilio Proxy pages, by HTTP transport.

Serves 1,000 pre-rendered pages of 50 interactions from an aiohttp server in a separate process
on 127.0.0.1, then fetches and parses every page 8 sessions at a time with:

  (a) ProxyClient on httpx's default AsyncHTTPTransport (the baseline),
  (b) ProxyClient on httpx_aiohttp.AiohttpTransport (the default until 2026-12-02; it needs
      the bench extras: ``pip install -e '.[bench]'``),
  (c) ProxyClient on poller.http.wire.WireTransport (what ProxyClient picks by default),
  (d) bare aiohttp with json.loads and Interaction.from_api (the floor).

Prints the client process's CPU seconds and the wall seconds of each (best of N rounds) and
their ratios to (a).  Run: ``python bench/bench_transport.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

from poller.http.wire import WireTransport
from poller.twilio.client import ProxyClient
from poller.twilio.records import Interaction

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "interaction_fetch.json"
SERVICE = "KS" + "a" * 32
SESSIONS = 8
PAGES_PER_SESSION = 125  # 8 x 125 = 1,000 pages
PAGE_SIZE = 50
CONCURRENCY = 8


def session_sid(index: int) -> str:
    return f"KC{index:032x}"


def interactions_path(session: str) -> str:
    return f"/v1/Services/{SERVICE}/Sessions/{session}/Interactions"


def page_path_qs(path: str, page: int) -> str:
    """Return the path and query of a page, as Twilio's next_page_url spells it."""
    first = f"{path}?PageSize={PAGE_SIZE}"
    return f"{first}&Page={page}&PageToken=PT{page}" if page else first


def render_pages(origin: str) -> dict[str, bytes]:
    """Return every page body, keyed by the path and query that asks for it."""
    template: dict[str, Any] = json.loads(FIXTURE.read_text())
    pages: dict[str, bytes] = {}
    serial = 0
    for s in range(SESSIONS):
        session = session_sid(s)
        path = interactions_path(session)
        for page in range(PAGES_PER_SESSION):
            items = []
            for _ in range(PAGE_SIZE):
                serial += 1
                sid = f"KI{serial:032x}"
                items.append(
                    {**template, "sid": sid, "session_sid": session, "url": f"{origin}{path}/{sid}"}
                )
            this = page_path_qs(path, page)
            last = page == PAGES_PER_SESSION - 1
            nxt = None if last else page_path_qs(path, page + 1)
            meta = {
                "key": "interactions",
                "page": page,
                "page_size": PAGE_SIZE,
                "url": f"{origin}{this}",
                "first_page_url": f"{origin}{path}?PageSize={PAGE_SIZE}",
                "previous_page_url": None,
                "next_page_url": None if nxt is None else f"{origin}{nxt}",
            }
            pages[this] = json.dumps({"interactions": items, "meta": meta}).encode()
    return pages


async def serve() -> None:
    """Serve the pages until stdin closes; print the port first."""
    pages: dict[str, bytes] = {}

    async def handle(request: web.Request) -> web.Response:
        body = pages.get(request.path_qs)
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    pages.update(render_pages(f"http://127.0.0.1:{port}"))
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


@dataclass(frozen=True)
class Settings:
    base_url: str
    page_size: int = PAGE_SIZE
    max_requests_per_second: float = 1e9  # measure the transport, not the rate limiter
    max_concurrency: int = CONCURRENCY
    timeout_seconds: float = 30.0
    retry_deadline_seconds: float = 30.0

    @property
    def credentials(self) -> tuple[str, str]:
        return "AC" + "0" * 32, "bench-token"


async def via_proxy_client(client: ProxyClient) -> int:
    async with client:
        lists = await asyncio.gather(
            *(client.list_interactions(SERVICE, session_sid(s)) for s in range(SESSIONS))
        )
    return sum(len(found) for found in lists)


async def httpx_default(base_url: str) -> int:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    return await via_proxy_client(ProxyClient(Settings(base_url), transport=transport))


async def httpx_aiohttp(base_url: str) -> int:
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    transport = AiohttpTransport(limits=limits, verify=False)
    return await via_proxy_client(ProxyClient(Settings(base_url), transport=transport))


async def wire(base_url: str) -> int:
    client = ProxyClient(Settings(base_url))
    assert isinstance(client._transport, WireTransport)
    return await via_proxy_client(client)


async def bare_aiohttp(base_url: str) -> int:
    token = base64.b64encode(":".join(Settings(base_url).credentials).encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)

    async def one_session(http: aiohttp.ClientSession, session: str) -> int:
        count = 0
        url: str | None = f"{base_url}{interactions_path(session)}?PageSize={PAGE_SIZE}"
        while url is not None:
            async with http.get(url) as response:
                response.raise_for_status()
                body = json.loads(await response.read())
            count += sum(
                Interaction.from_api(item) is not None for item in body[body["meta"]["key"]]
            )
            url = body["meta"]["next_page_url"]
        return count

    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        counts = await asyncio.gather(*(one_session(http, session_sid(s)) for s in range(SESSIONS)))
    return sum(counts)


VARIANTS: dict[str, Callable[[str], Awaitable[int]]] = {
    "httpx default AsyncHTTPTransport": httpx_default,
    "httpx + httpx_aiohttp": httpx_aiohttp,
    "httpx + poller.http.wire (ProxyClient default)": wire,
    "bare aiohttp (floor)": bare_aiohttp,
}


async def measure(base_url: str, rounds: int) -> dict[str, tuple[float, float]]:
    best: dict[str, tuple[float, float]] = {}
    expected = SESSIONS * PAGES_PER_SESSION * PAGE_SIZE
    for _ in range(rounds):
        for name, run in VARIANTS.items():
            cpu, wall = time.process_time(), time.perf_counter()
            count = await run(base_url)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if count != expected:
                raise SystemExit(f"{name}: parsed {count} interactions, expected {expected}")
            old_cpu, old_wall = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old_cpu, cpu), min(old_wall, wall))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="best of N rounds (default 3)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    command = [sys.executable, __file__, "--serve"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as server:
        assert server.stdin is not None
        assert server.stdout is not None
        try:
            port = int(server.stdout.readline())
            best = asyncio.run(measure(f"http://127.0.0.1:{port}", args.rounds))
        finally:
            server.stdin.close()  # the server stops when its stdin closes
    pages = SESSIONS * PAGES_PER_SESSION
    print(
        f"{pages} pages x {PAGE_SIZE} interactions, {CONCURRENCY} concurrent,"
        f" best of {args.rounds} rounds (client process only; server in its own process)"
    )
    base_cpu, base_wall = best["httpx default AsyncHTTPTransport"]
    print(f"{'transport':<46}{'CPU s':>8}{'wall s':>8}{'CPU x':>8}{'wall x':>8}")
    for name, (cpu, wall) in best.items():
        print(f"{name:<46}{cpu:>8.2f}{wall:>8.2f}{cpu / base_cpu:>8.2f}{wall / base_wall:>8.2f}")


if __name__ == "__main__":
    main()
