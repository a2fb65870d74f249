"""One HTTP/1.1 connection of :class:`poller.http.wire.WireTransport`, and its current answer.

An ``asyncio.Protocol``: the loop's callbacks and httptools' (llhttp's) record what happened
and wake the one task waiting; that task, in :meth:`Connection.send`, :meth:`Connection.head`
or :meth:`Connection.body`, raises what went wrong, as httpx's exceptions. The pool, the
retry and the body handed to httpx are the transport's (poller/http/wire.py).
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

_NO_BODY_STATUSES = frozenset({204, 304})

Origin = tuple[str, str, int]


class Stale(Exception):
    """A reused connection ended before one byte of the answer came back."""


class _OutOfTurn(Exception):
    """The server sent more than the one answer asked for."""


class Connection(asyncio.Protocol):
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
        tls = context if scheme == "https" else None
        if scheme == "https" and tls is None:
            raise httpx.UnsupportedProtocol("https: this transport has no TLS context")
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
                    raise Stale
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
            raise Stale
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
        if status not in _NO_BODY_STATUSES and not any(map(_delimits, self.headers)):
            self._until_eof = True  # the body ends with the connection
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


def _delimits(header: tuple[bytes, bytes]) -> bool:
    """Whether ``header`` says where the body ends (a length, or chunks)."""
    name = header[0].lower()
    return name == b"content-length" or (
        name == b"transfer-encoding" and b"chunked" in header[1].lower()
    )
