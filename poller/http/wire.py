"""HTTP/1.1 under httpx: a pool of keep-alive connections on asyncio, answers parsed by llhttp.

:class:`WireTransport` is what every client of the poller sends through
(:func:`poller.http.transport.pooled_transport`). A library's would do, at a price measured by
bench/bench_startup.py and bench/bench_transport.py: httpx's own transport (httpcore) costs
about twice the CPU per request, aiohttp's client about 50 ms of CPU to import, a third of
``poller once``'s start. The part where a hand-written client goes wrong, reading what the
server sent, is llhttp's (through httptools, the parser uvicorn and aiohttp use); what is here
is the life of a connection.

What it does, and nothing more:

- HTTP/1.1, one exchange at a time per connection, over TCP or TLS (the context given);
- at most ``limits.max_connections`` connections open, ``max_keepalive_connections`` of them
  idle, each for at most ``keepalive_expiry`` seconds; a request waits for a free one up to its
  ``pool`` timeout;
- each of the request's ``timeout`` extension's ``connect``, ``write``, ``read`` and ``pool``
  bounds one wait, as httpcore's do;
- the body is handed over as it arrives, undecoded (poller.http.body inflates and bounds it),
  and reading stops while more than ``connection.HIGH_WATER`` bytes of it wait to be read;
- a request sent on a reused connection that the server had meanwhile closed (not one byte of
  an answer came back) is sent once more on a new connection, as browsers do: delivery is at
  least once, and the alternative is a retry much later;
- no proxies, redirects, cookies, HTTP/2, upgrades or HEAD requests (the poller sends none).

What it raises is httpx's (``ConnectError``, ``ConnectTimeout``, ``WriteError``,
``WriteTimeout``, ``ReadError``, ``ReadTimeout``, ``PoolTimeout``, ``RemoteProtocolError``,
``LocalProtocolError``, ``UnsupportedProtocol``), chained to the ``OSError`` or parser error
behind it (poller.http.failures names the failure after that one).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator

import httpx

from poller.http.connection import Connection, Origin, Stale

_PORTS = {"http": 80, "https": 443}


class WireTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` over a pool of HTTP/1.1 connections.

    ``ssl_context`` is the TLS context of every https connection; without one, the transport
    speaks plain http only.
    """

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self.limits = limits
        self.ssl_context = ssl_context
        self._max_open = limits.max_connections
        max_idle = limits.max_keepalive_connections
        if max_idle is None:
            max_idle = self._max_open
        self._max_idle: int | None = max_idle
        self._expiry = limits.keepalive_expiry
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_count = 0
        self._open: set[Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        message = _message(request, await request.aread())
        read_timeout = timeouts.get("read")
        reuse = True
        while True:
            connection = await self._acquire(origin, timeouts, reuse=reuse)
            try:
                await connection.send(message, timeouts.get("write"))
                await connection.head(read_timeout)
            except Stale:
                self._discard(connection)
                reuse = False  # a new connection is never stale: this loops once at most
                continue
            except BaseException:
                self._discard(connection)
                raise
            return httpx.Response(
                connection.status,
                headers=connection.headers,
                stream=_Body(self, connection, read_timeout),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason},
                request=request,
            )

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        self._idle_count = 0
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def open_connections(self) -> int:
        """How many connections are open (busy or idle)."""
        return len(self._open)

    async def _acquire(
        self, origin: Origin, timeouts: dict[str, float | None], *, reuse: bool = True
    ) -> Connection:
        while True:
            if self._closed:
                raise RuntimeError("the transport is closed")
            connection = self._reuse(origin) if reuse else None
            if connection is not None:
                return connection
            if self._max_open is None or len(self._open) < self._max_open or self._evict():
                break
            await self._wait_for_room(timeouts.get("pool"))
        connection = Connection(origin)
        self._open.add(connection)
        try:
            await connection.connect(self.ssl_context, timeouts.get("connect"))
        except BaseException:
            self._discard(connection)
            raise
        return connection

    def _reuse(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.reusable(self._expiry):
                connection.exchanges += 1
                return connection
            self._discard(connection)
        return None

    def _evict(self) -> bool:
        """Close the longest idle connection: True if there was one."""
        oldest: Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        self._idle[oldest.origin].remove(oldest)
        self._idle_count -= 1
        self._discard(oldest)
        return True

    async def _wait_for_room(self, seconds: float | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                await waiter
        except BaseException as leaving:
            if waiter.done() and not waiter.cancelled() and waiter not in self._waiters:
                self._wake()  # woken, yet leaving (cancelled, timed out): the room is another's
            if isinstance(leaving, TimeoutError):
                raise httpx.PoolTimeout("no connection free within the pool timeout") from leaving
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _release(self, connection: Connection) -> None:
        """The exchange on ``connection`` is over: keep it for the next, else close it."""
        if (
            connection.keep_alive
            and not connection.closed
            and not self._closed
            and (self._max_idle is None or self._idle_count < self._max_idle)
        ):
            connection.idle()
            self._idle.setdefault(connection.origin, []).append(connection)
            self._idle_count += 1
            self._wake()
        else:
            self._discard(connection)

    def _discard(self, connection: Connection) -> None:
        connection.close()
        if connection in self._open:
            self._open.discard(connection)
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _Body(httpx.AsyncByteStream):
    """An answer's body: iterating it reads it; the exchange's end gives the connection back."""

    __slots__ = ("_connection", "_pool", "_seconds")

    def __init__(self, pool: WireTransport, connection: Connection, seconds: float | None) -> None:
        self._pool: WireTransport | None = pool
        self._connection = connection
        self._seconds = seconds

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._connection.body(self._seconds):
                yield chunk
        except BaseException:
            self._end(reusable=False)
            raise
        self._end(reusable=True)

    async def aclose(self) -> None:
        self._end(reusable=False)  # read to its end, it was given back already

    def _end(self, *, reusable: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if reusable and self._connection.complete:
            pool._release(self._connection)
        else:
            pool._discard(self._connection)


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    port = _PORTS.get(scheme)
    if port is None:
        raise httpx.UnsupportedProtocol(f"expected an http or https URL, got {scheme!r}")
    if not url.host:
        raise httpx.UnsupportedProtocol("the URL has no host")
    return (scheme, url.host, url.port or port)


def _message(request: httpx.Request, body: bytes) -> bytes:
    """The request on the wire: its head (httpx set Host and the body's length) and body."""
    if request.method == "HEAD":  # its answer's length is that of a body it does not have
        raise httpx.UnsupportedProtocol("HEAD requests are not supported")
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    chunked = False
    for name, value in request.headers.raw:
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
            raise httpx.LocalProtocolError("a header holds a line break")
        if name.lower() == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        lines.append(name + b": " + value)
    lines.append(b"")
    if chunked:  # a streamed body of unknown length, read whole by now: one chunk
        body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    return b"\r\n".join(lines) + b"\r\n" + body
