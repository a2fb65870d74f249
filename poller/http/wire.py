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
  and reading stops while more than :data:`HIGH_WATER` bytes of it wait to be read;
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
from typing import NoReturn

import httptools
import httpx

# Bytes of a body received and not yet read, above which the socket is not read (below LOW_WATER
# it is again).
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUSES = frozenset({204, 304})

Origin = tuple[str, str, int]


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
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._open: set[_Connection] = set()
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
            except _Stale:
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
    ) -> _Connection:
        while True:
            if self._closed:
                raise RuntimeError("the transport is closed")
            connection = self._reuse(origin) if reuse else None
            if connection is not None:
                return connection
            if self._max_open is None or len(self._open) < self._max_open or self._evict():
                break
            await self._wait_for_room(timeouts.get("pool"))
        connection = _Connection(origin)
        self._open.add(connection)
        try:
            await connection.connect(self.ssl_context, timeouts.get("connect"))
        except BaseException:
            self._discard(connection)
            raise
        return connection

    def _reuse(self, origin: Origin) -> _Connection | None:
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
        oldest: _Connection | None = None
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

    def _release(self, connection: _Connection) -> None:
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

    def _discard(self, connection: _Connection) -> None:
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


class _Stale(Exception):
    """A reused connection ended before one byte of the answer came back."""


class _OutOfTurn(Exception):
    """The server sent more than the one answer asked for."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, and the answer of its current exchange.

    The protocol's callbacks (the loop's and the parser's) only record what happened and wake
    the one task waiting (:meth:`_progress`); that task raises what went wrong.
    """

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.exchanges = 0  # how many exchanges before the current one
        self.idle_since = 0.0
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._writable = True
        # The current exchange's answer.
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self._interim = False  # a 1xx answer, which another follows
        self._headed = False
        self._complete = False
        self._until_eof = False
        self._heard = False  # a byte of the answer came
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: Exception | None = None

    async def connect(self, context: ssl.SSLContext | None, seconds: float | None) -> None:
        scheme, host, port = self.origin
        tls = None
        if scheme == "https":
            if context is None:
                raise httpx.UnsupportedProtocol("https: this transport has no TLS context")
            tls = context
        try:
            async with asyncio.timeout(seconds):
                await self._loop.create_connection(
                    lambda: self, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError as expired:  # before OSError: TimeoutError is one
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from expired
        except OSError as error:  # ssl.SSLError included
            raise httpx.ConnectError(f"{type(error).__name__}: {error}") from error

    def reusable(self, expiry: float | None) -> bool:
        if self.closed or self._transport is None or self._transport.is_closing():
            return False
        return expiry is None or self._loop.time() - self.idle_since < expiry

    def idle(self) -> None:
        self.idle_since = self._loop.time()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            if self._transport.get_write_buffer_size():
                self._transport.abort()  # close() would first flush what nobody may read
            else:
                self._transport.close()

    async def send(self, message: bytes, seconds: float | None) -> None:
        self._begin()
        transport = self._transport
        if self.closed or transport is None or transport.is_closing():
            self._fail_unsent()
        transport.write(message)
        while not self._writable and self._error is None:
            await self._progress(seconds, httpx.WriteTimeout, "writing the request timed out")
        if self._error is not None and not self._heard:
            self._fail_unsent()

    async def head(self, seconds: float | None) -> None:
        """Wait for the answer's status line and headers."""
        while not self._headed:
            if self._error is not None:
                if not self._heard and self.exchanges:
                    raise _Stale
                raise self._error
            await self._progress(seconds, httpx.ReadTimeout, "no answer within the read timeout")

    async def body(self, seconds: float | None) -> AsyncIterator[bytes]:
        """The answer's body, chunk by chunk as it arrives; then the exchange is over."""
        chunks = self._chunks
        while True:
            while chunks:
                chunk = chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < LOW_WATER and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
                yield chunk
            if self._complete:
                return
            if self._error is not None:
                raise self._error
            await self._progress(seconds, httpx.ReadTimeout, "the body stalled past the timeout")

    @property
    def complete(self) -> bool:
        return self._complete

    def _begin(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers = []
        self.keep_alive = False
        self._interim = self._headed = self._complete = self._until_eof = False
        self._heard = False
        self._chunks.clear()
        self._buffered = 0
        self._error = None

    def _fail_unsent(self) -> NoReturn:
        if self.exchanges:
            raise _Stale
        raise httpx.WriteError("the connection closed before the request was sent")

    async def _progress(
        self, seconds: float | None, expired_error: type[httpx.TimeoutException], what: str
    ) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            async with asyncio.timeout(seconds):
                await waiter
        except TimeoutError as expired:
            raise expired_error(what) from expired
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._complete or self.closed:  # nothing was asked: a server talking out of turn
            self.close()
            return
        self._heard = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._failed(httpx.RemoteProtocolError("the server switched protocols"), upgrade)
        except httptools.HttpParserError as error:
            self._failed(httpx.RemoteProtocolError(f"not an HTTP/1.1 answer: {error}"), error)
        else:
            if self._buffered > HIGH_WATER and not self._paused and self._transport is not None:
                self._paused = True
                self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # the transport closes itself, then connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._headed and self._until_eof and exc is None and not self._complete:
            self._complete = True  # a body delimited by the end of the connection
        elif not self._complete and self._error is None:
            if exc is None:
                error: Exception = httpx.RemoteProtocolError(
                    "the server closed the connection before the answer ended"
                )
            else:
                error = httpx.ReadError(f"{type(exc).__name__}: {exc}")
                error.__cause__ = exc
            self._error = error
        self._writable = True
        self._wake()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake()

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request
            raise _OutOfTurn
        self.reason = b""
        self.headers = []

    def on_status(self, status: bytes) -> None:
        self.reason += status  # in pieces, as the status line was split between reads

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._interim = True  # 100 Continue or 103 Early Hints: the answer comes after
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        if status not in _NO_BODY_STATUSES:
            delimited = False
            for name, value in self.headers:
                lowered = name.lower()
                if lowered == b"content-length" or (
                    lowered == b"transfer-encoding" and b"chunked" in value.lower()
                ):
                    delimited = True
                    break
            if not delimited:
                self._until_eof = True
                self.keep_alive = False
        self._headed = True

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True

    def _failed(self, error: Exception, cause: BaseException) -> None:
        error.__cause__ = cause
        self._error = error
        self.close()


class _Body(httpx.AsyncByteStream):
    """An answer's body: iterating it reads it; the exchange's end gives the connection back."""

    __slots__ = ("_connection", "_pool", "_seconds")

    def __init__(self, pool: WireTransport, connection: _Connection, seconds: float | None) -> None:
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
