"""WireTransport held to each promise of its docstring, over real connections on 127.0.0.1.

Raw ``asyncio.start_server`` servers write exact bytes (each test scripts its wire, and the
server counts the connections it accepted and keeps every request it read); aiohttp serves
where a real server is enough; TLS uses a fresh self-signed certificate for 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import httptools
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from poller.http.connection import HIGH_WATER, Connection
from poller.http.tls import client_context
from poller.http.wire import WireTransport
from tests.smtp_server import self_signed

T = TypeVar("T")

pytestmark = pytest.mark.timeout(10)  # a transport that hangs fails its test, not the run

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=5.0)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
# What asyncio's plain TCP transport reads from its socket at once (selector_events' max_size).
ONE_READ = 256 * 1024
# How long a test waits at most for what should happen at once (a failure, not a hang).
BOUND = 2.0


# the server side: raw bytes, scripted per connection


@dataclass(frozen=True)
class Seen:
    """One request as the server read it off the wire."""

    line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int  # the number of the accepted connection it came on, from 1


@dataclass
class Peer:
    """One connection the server accepted, as its script drives it."""

    server: Server
    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # the client closed it

    async def request(self) -> Seen | None:
        """Read one whole request (its body by length or chunked); None once the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended.set()
            return None
        line, *lines = head[:-4].split(b"\r\n")
        headers = [(name, value) for name, _, value in (h.partition(b": ") for h in lines)]
        named = {name.lower(): value for name, value in headers}
        if b"content-length" in named:
            body = await self.reader.readexactly(int(named[b"content-length"]))
        elif named.get(b"transfer-encoding") == b"chunked":
            body = await self._chunked()
        else:
            body = b""
        seen = Seen(line, headers, body, self.number)
        self.server.requests.append(seen)
        return seen

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self) -> None:
        """Read (and keep) whatever the client sends, answering nothing, until it closes."""
        while await self.request() is not None:
            pass

    async def _chunked(self) -> bytes:
        body = b""
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await self.reader.readexactly(size)
            assert await self.reader.readexactly(2) == b"\r\n"
        assert await self.reader.readuntil(b"\r\n") == b"\r\n"  # no trailers
        return body


Script = Callable[[Peer], Awaitable[None]]


class Server:
    """A server on 127.0.0.1 running ``script`` on each connection it accepts."""

    def __init__(self, script: Script, scheme: str) -> None:
        self.script = script
        self.scheme = scheme
        self.port = 0
        self.peers: list[Peer] = []
        self.requests: list[Seen] = []
        self.errors: list[Exception] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def accepted(self) -> int:
        return len(self.peers)

    def url(self, target: str = "/x") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{target}"

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        peer = Peer(self, len(self.peers) + 1, reader, writer)
        self.peers.append(peer)
        try:
            await self.script(peer)
        except (ConnectionError, ssl.SSLError):
            pass  # the client went away mid-answer: some tests are about that
        except Exception as error:  # a broken script fails the test at teardown
            self.errors.append(error)
        except asyncio.CancelledError:
            pass  # the test is over; and 3.11's streams log a handler task that ends cancelled
        finally:
            writer.close()


class Serve(Protocol):
    def __call__(self, script: Script, tls: ssl.SSLContext | None = None) -> Awaitable[Server]: ...


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start servers for the test; stop them, and their scripts, after it."""
    running: list[tuple[Server, asyncio.Server]] = []

    async def start(script: Script, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(script, "https" if tls else "http")
        listening = await asyncio.start_server(server.accept, "127.0.0.1", 0, ssl=tls)
        server.port = listening.sockets[0].getsockname()[1]
        running.append((server, listening))
        return server

    yield start
    for server, listening in running:
        listening.close()
        await listening.wait_closed()
        for task in server.tasks:
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)
        assert server.errors == []


def answering(*answers: bytes) -> Script:
    """Answer a connection's requests with ``answers`` in turn, then wait for the client's close."""

    async def script(peer: Peer) -> None:
        for answer in answers:
            if await peer.request() is None:
                return
            await peer.send(answer)
        await peer.until_closed()

    return script


def always(answer: bytes) -> Script:
    """Answer every request with ``answer``."""

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(answer)

    return script


def by_connection(*scripts: Script) -> Script:
    """Run the first script on the first connection, the second on the second, and so on."""

    async def script(peer: Peer) -> None:
        await scripts[peer.number - 1](peer)

    return script


async def answer_and_close(peer: Peer) -> None:
    """Answer the first request, and close."""
    await peer.request()
    await peer.send(OK)


async def hang_up_at_the_next_request(peer: Peer) -> None:
    """Answer the first request; read the second whole, and close without a word."""
    await peer.request()
    await peer.send(OK)
    await peer.request()


# the client side


class Read(NamedTuple):
    size: int
    paused_before: bool  # the connection had paused reading when this read came
    paused_after: bool
    buffered: int  # body bytes waiting to be read, after it


class Spy:
    """What the client's connections go through: each socket read, each loss, each send."""

    def __init__(self) -> None:
        self.reads: list[Read] = []
        self.lost = 0
        self.sent = 0
        self.changed = asyncio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` holds, checking it after each callback of a connection."""
        async with asyncio.timeout(BOUND):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def read_after(self, count: int) -> None:
        """Wait for the client's read after its ``count`` first ones."""
        await self.until(lambda: len(self.reads) > count)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    """Wrap every client connection's ``data_received``, ``connection_lost`` and ``send``."""
    seen = Spy()
    connection = Connection
    data_received, connection_lost, send = (
        connection.data_received,
        connection.connection_lost,
        connection.send,
    )

    def reading(self: Connection, data: bytes) -> None:
        paused = self._paused
        data_received(self, data)
        seen.reads.append(Read(len(data), paused, self._paused, self._buffered))
        seen.changed.set()

    def losing(self: Connection, exc: Exception | None) -> None:
        connection_lost(self, exc)
        seen.lost += 1
        seen.changed.set()

    async def sending(self: Connection, message: bytes, seconds: float | None) -> None:
        seen.sent += 1
        await send(self, message, seconds)

    monkeypatch.setattr(connection, "data_received", reading)
    monkeypatch.setattr(connection, "connection_lost", losing)
    monkeypatch.setattr(connection, "send", sending)
    return seen


MakeTransport = Callable[..., WireTransport]


@pytest.fixture
async def transports() -> AsyncIterator[MakeTransport]:
    """Make WireTransports (of ``LIMITS`` unless told); close every one after the test."""
    made: list[WireTransport] = []

    def make(limits: httpx.Limits = LIMITS, context: ssl.SSLContext | None = None) -> WireTransport:
        made.append(WireTransport(limits, context))
        return made[-1]

    yield make
    for transport in made:
        await transport.aclose()
    await asyncio.sleep(0)  # the closed sockets' connection_lost callbacks run


def bounds(
    connect: float = BOUND, read: float = BOUND, write: float = BOUND, pool: float = BOUND
) -> dict[str, Any]:
    return {"timeout": {"connect": connect, "read": read, "write": write, "pool": pool}}


def get(url: str, **timeouts: float) -> httpx.Request:
    return httpx.Request("GET", url, extensions=bounds(**timeouts))


async def exchange(
    transport: WireTransport, request: httpx.Request
) -> tuple[httpx.Response, bytes]:
    """Send ``request``; read its answer's body whole, as it came on the wire."""
    response = await transport.handle_async_request(request)
    return response, b"".join([chunk async for chunk in response.aiter_raw()])


async def read_into(got: bytearray, response: httpx.Response) -> None:
    """Read ``response``'s body into ``got`` as it comes, keeping what came before a failure."""
    async with asyncio.timeout(BOUND):
        async for chunk in response.aiter_raw():
            got += chunk


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, BOUND)


def waiting(transport: WireTransport) -> int:
    """How many requests wait for room in the pool."""
    return len(transport._waiters)


# round trips


async def test_a_get_goes_out_as_httpx_built_it_and_its_answer_comes_back_as_sent(
    serve: Serve, transports: MakeTransport
) -> None:
    answer = (
        b"HTTP/1.1 201 Made Here\r\nSet-Cookie: a=1\r\nX-Multi: one\r\nSet-Cookie: b=2\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    server = await serve(answering(answer))
    request = httpx.Request(
        "GET",
        server.url("/p/a%20b?x=1&y=2"),
        headers=[("X-A", "1"), ("X-B", "2"), ("X-A", "3")],
        extensions=bounds(),
    )
    response, body = await exchange(transports(), request)
    assert (response.status_code, response.extensions["reason_phrase"]) == (201, b"Made Here")
    assert response.extensions["http_version"] == b"HTTP/1.1"
    assert response.headers.raw == [
        (b"Set-Cookie", b"a=1"),
        (b"X-Multi", b"one"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Length", b"5"),
    ]
    assert body == b"hello"
    (seen,) = server.requests
    assert seen.line == b"GET /p/a%20b?x=1&y=2 HTTP/1.1"
    assert seen.headers == [
        (b"Host", f"127.0.0.1:{server.port}".encode()),
        (b"X-A", b"1"),
        (b"X-B", b"2"),
        (b"X-A", b"3"),
    ]
    assert seen.body == b""


async def test_a_post_sends_its_content_length_and_body(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(answering(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"))
    request = httpx.Request("POST", server.url("/hook"), content=b'{"a": 1}', extensions=bounds())
    response, body = await exchange(transports(), request)
    assert (response.status_code, response.extensions["reason_phrase"], body) == (
        202,
        b"Accepted",
        b"",
    )
    (seen,) = server.requests
    assert seen.line == b"POST /hook HTTP/1.1"
    assert seen.headers == [
        (b"Host", f"127.0.0.1:{server.port}".encode()),
        (b"Content-Length", b"8"),
    ]
    assert seen.body == b'{"a": 1}'


async def test_a_streamed_body_of_unknown_length_goes_chunked_and_arrives_whole(
    serve: Serve, transports: MakeTransport
) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one ", b"", b"two ", b"three"):
            yield part

    server = await serve(answering(OK))
    request = httpx.Request("POST", server.url(), content=parts(), extensions=bounds())
    response, body = await exchange(transports(), request)
    assert (response.status_code, body) == (200, b"hi")
    (seen,) = server.requests
    assert (b"Transfer-Encoding", b"chunked") in seen.headers
    assert not any(name.lower() == b"content-length" for name, _ in seen.headers)
    assert seen.body == b"one two three"


async def test_a_real_server_answers_two_posts_over_one_connection(
    transports: MakeTransport,
) -> None:
    peers: list[object] = []

    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.read()
        return web.Response(body=body[::-1], headers={"X-Echo": request.path_qs})

    app = web.Application()
    app.router.add_post("/echo", echo)
    transport = transports()
    async with TestServer(app, host="127.0.0.1") as server:
        answers = [
            await exchange(
                transport,
                httpx.Request(
                    "POST", str(server.make_url(f"/echo?n={n}")), content=data, extensions=bounds()
                ),
            )
            for n, data in enumerate([b"abc", b"hello"])
        ]
    assert [(r.status_code, r.extensions["reason_phrase"], body) for r, body in answers] == [
        (200, b"OK", b"cba"),
        (200, b"OK", b"olleh"),
    ]
    assert [r.headers["x-echo"] for r, _ in answers] == ["/echo?n=0", "/echo?n=1"]
    assert len(peers) == 2 and len(set(peers)) == 1 and None not in peers  # one connection


# body framings

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Split: yes\r\n\r\n"
CHUNKS = [b"5\r\nhello\r\n", b"1;ext=1\r\n,\r\n", b"6\r\n world\r\n", b"0\r\n\r\n"]
CHUNKED = CHUNKED_HEAD + b"".join(CHUNKS)


@pytest.mark.parametrize(
    "pieces",
    [[CHUNKED], [CHUNKED_HEAD, *CHUNKS], [bytes([byte]) for byte in CHUNKED]],
    ids=["one write", "chunk by chunk", "byte by byte"],
)
async def test_a_chunked_answer_split_any_way_is_read_whole_and_keeps_the_connection(
    serve: Serve, transports: MakeTransport, spy: Spy, pieces: list[bytes]
) -> None:
    async def piecewise(peer: Peer) -> None:
        await peer.request()
        for piece in pieces:  # each read by the client before the next goes
            count = len(spy.reads)
            await peer.send(piece)
            await spy.read_after(count)
        await always(OK)(peer)

    server = await serve(piecewise)
    transport = transports()
    response, body = await exchange(transport, get(server.url()))
    assert [read.size for read in spy.reads] == [len(piece) for piece in pieces]
    assert (response.status_code, response.extensions["reason_phrase"]) == (200, b"OK")
    assert response.headers.raw == [(b"Transfer-Encoding", b"chunked"), (b"X-Split", b"yes")]
    assert body == b"hello, world"
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 1


async def test_a_body_without_a_length_runs_to_the_end_of_the_connection_which_is_not_reused(
    serve: Serve, transports: MakeTransport
) -> None:
    async def until_eof(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await peer.send(b"part two")

    server = await serve(by_connection(until_eof, always(OK)))
    transport = transports()
    response, body = await exchange(transport, get(server.url()))
    assert (response.status_code, body) == (200, b"part one, part two")
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: "v1"\r\n\r\n',
    ],
    ids=["204", "304"],
)
async def test_a_204_or_304_has_no_body_whatever_its_headers_and_keeps_the_connection(
    serve: Serve, transports: MakeTransport, answer: bytes
) -> None:
    server = await serve(answering(answer, OK))
    transport = transports()
    response, body = await exchange(transport, get(server.url()))
    assert (response.status_code, body) == (int(answer[9:12]), b"")
    second, body = await exchange(transport, get(server.url()))
    assert (second.status_code, body) == (200, b"hi")
    assert server.accepted == 1


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    ],
    ids=["100", "103"],
)
async def test_an_interim_answer_is_skipped_for_the_real_one(
    serve: Serve, transports: MakeTransport, interim: bytes
) -> None:
    final = b"HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 2\r\n\r\nhi"
    server = await serve(answering(interim + final, OK))
    transport = transports()
    response, body = await exchange(transport, get(server.url()))
    assert (response.status_code, response.extensions["reason_phrase"], body) == (200, b"OK", b"hi")
    assert response.headers.raw == [(b"X-Final", b"yes"), (b"Content-Length", b"2")]
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 1


# keep-alive


async def test_two_requests_in_turn_share_one_connection(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(always(OK))
    transport = transports()
    for _ in range(3):
        assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 1
    assert [seen.connection for seen in server.requests] == [1, 1, 1]
    assert transport.open_connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    ],
    ids=["connection close", "http/1.0"],
)
async def test_an_answer_that_ends_its_connection_is_not_reused_and_the_client_closes_it(
    serve: Serve, transports: MakeTransport, answer: bytes
) -> None:
    server = await serve(by_connection(answering(answer), always(OK)))
    transport = transports()
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    await within(server.peers[0].ended.wait())  # the server left it open: the client closed it
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 2
    assert [seen.connection for seen in server.requests] == [1, 2]


async def test_idle_connections_beyond_max_keepalive_are_closed(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(always(OK))
    transport = transports(httpx.Limits(max_connections=4, max_keepalive_connections=1))
    first = await transport.handle_async_request(get(server.url()))
    second = await transport.handle_async_request(get(server.url()))
    assert server.accepted == 2
    await first.aread()  # kept idle
    await second.aread()  # one idle already: closed
    await within(server.peers[1].ended.wait())
    assert not server.peers[0].ended.is_set()
    assert transport.open_connections == 1
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 2 and server.requests[-1].connection == 1


async def test_an_idle_connection_past_keepalive_expiry_is_not_reused(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(always(OK))
    transport = transports(httpx.Limits(max_connections=4, keepalive_expiry=0.05))
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    await asyncio.sleep(0.1)  # past the expiry: the time is the point
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 2
    await within(server.peers[0].ended.wait())  # closed by the client, not left open
    assert transport.open_connections == 1


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    serve: Serve, transports: MakeTransport, spy: Spy
) -> None:
    server = await serve(by_connection(answer_and_close, always(OK)))
    transport = transports()
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    await spy.until(lambda: spy.lost == 1)  # the client saw the server's close
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 2
    assert spy.sent == 2  # the second went out once, on the new connection: no retry was needed


async def test_an_idle_connection_to_another_origin_is_closed_for_room(
    serve: Serve, transports: MakeTransport
) -> None:
    first, second = await serve(always(OK)), await serve(always(OK))
    transport = transports(httpx.Limits(max_connections=1))
    assert (await exchange(transport, get(first.url())))[1] == b"hi"
    assert (await exchange(transport, get(second.url())))[1] == b"hi"
    await within(first.peers[0].ended.wait())
    assert (first.accepted, second.accepted, transport.open_connections) == (1, 1, 1)


# the stale-connection retry


async def test_a_reused_connection_closed_unanswered_sends_the_request_once_more(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(by_connection(hang_up_at_the_next_request, always(OK)))
    transport = transports()
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    post = httpx.Request("POST", server.url(), content=b"once", extensions=bounds())
    response, body = await exchange(transport, post)
    assert (response.status_code, body) == (200, b"hi")
    assert server.accepted == 2
    assert [(seen.connection, seen.body) for seen in server.requests] == [
        (1, b""),
        (1, b"once"),
        (2, b"once"),
    ]


async def test_the_retry_after_a_stale_connection_goes_on_a_new_one_not_another_idle_one(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(
        by_connection(hang_up_at_the_next_request, hang_up_at_the_next_request, always(OK))
    )
    transport = transports()
    first = await transport.handle_async_request(get(server.url()))
    second = await transport.handle_async_request(get(server.url()))
    await first.aread()
    await second.aread()  # two idle connections, both of which the server will drop
    post = httpx.Request("POST", server.url(), content=b"once", extensions=bounds())
    assert (await exchange(transport, post))[1] == b"hi"
    assert server.accepted == 3
    assert [(seen.connection, seen.body) for seen in server.requests] == [
        (1, b""),
        (2, b""),
        (2, b"once"),  # the idle one used last
        (3, b"once"),  # once more, on a new connection
    ]


async def test_a_fresh_connection_closed_unanswered_is_an_error_and_not_retried(
    serve: Serve, transports: MakeTransport
) -> None:
    async def hang_up(peer: Peer) -> None:
        await peer.request()

    server = await serve(hang_up)
    transport = transports()
    with pytest.raises(httpx.RemoteProtocolError, match="closed the connection"):
        await within(transport.handle_async_request(get(server.url())))
    assert (server.accepted, len(server.requests)) == (1, 1)
    assert transport.open_connections == 0


async def test_a_reused_connection_that_began_an_answer_is_not_retried(
    serve: Serve, transports: MakeTransport
) -> None:
    async def begin_and_hang_up(peer: Peer) -> None:
        await peer.request()
        await peer.send(OK)
        await peer.request()
        await peer.send(b"HTTP/1.1 200 O")

    server = await serve(begin_and_hang_up)
    transport = transports()
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    with pytest.raises(httpx.RemoteProtocolError, match="closed the connection"):
        await transport.handle_async_request(get(server.url()))
    assert (server.accepted, len(server.requests)) == (1, 2)


# pool limits


async def test_with_one_connection_a_second_request_waits_for_the_first_body_then_reuses_it(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(always(OK))
    transport = transports(httpx.Limits(max_connections=1))
    first = await transport.handle_async_request(get(server.url()))
    second = asyncio.create_task(exchange(transport, get(server.url())))
    await asyncio.sleep(0)  # the second runs up to its wait for room
    assert waiting(transport) == 1 and not second.done()
    assert await first.aread() == b"hi"
    response, body = await within(second)
    assert (response.status_code, body) == (200, b"hi")
    assert server.accepted == 1
    assert [seen.connection for seen in server.requests] == [1, 1]


async def test_a_full_pool_raises_pool_timeout_after_the_pool_bound(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(always(OK))
    transport = transports(httpx.Limits(max_connections=1))
    first = await transport.handle_async_request(get(server.url()))
    with pytest.raises(httpx.PoolTimeout) as caught:
        await transport.handle_async_request(get(server.url(), pool=0.1))
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert (server.accepted, len(server.requests), waiting(transport)) == (1, 1, 0)
    await first.aclose()


async def test_an_answer_closed_unread_frees_its_slot_and_its_connection_is_closed(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(always(OK))
    transport = transports(httpx.Limits(max_connections=1))
    first = await transport.handle_async_request(get(server.url()))
    await first.aclose()
    response, body = await exchange(transport, get(server.url(), pool=0.1))
    assert (response.status_code, body) == (200, b"hi")
    assert server.accepted == 2
    await within(server.peers[0].ended.wait())
    assert transport.open_connections == 1


async def test_a_waiter_woken_then_cancelled_passes_the_free_connection_on(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(always(OK))
    transport = transports(httpx.Limits(max_connections=1))
    first = await transport.handle_async_request(get(server.url()))
    second = asyncio.create_task(exchange(transport, get(server.url())))
    third = asyncio.create_task(exchange(transport, get(server.url())))
    await asyncio.sleep(0)  # both run up to their wait for room
    assert waiting(transport) == 2
    await first.aread()  # gives the connection back and wakes the second...
    assert waiting(transport) == 1 and not second.done()
    second.cancel()  # ...which is cancelled before it ran
    with pytest.raises(asyncio.CancelledError):
        await second
    response, body = await within(third)
    assert (response.status_code, body) == (200, b"hi")
    assert server.accepted == 1


# timeouts


async def test_no_answer_within_the_read_bound_is_read_timeout(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(answering())
    transport = transports()
    with pytest.raises(httpx.ReadTimeout) as caught:
        await transport.handle_async_request(get(server.url(), read=0.1))
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert transport.open_connections == 0
    await within(server.peers[0].ended.wait())


async def test_a_body_stalling_mid_way_is_read_timeout_while_reading(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"))
    transport = transports()
    response = await transport.handle_async_request(get(server.url(), read=0.1))
    got = bytearray()
    with pytest.raises(httpx.ReadTimeout) as caught:
        await read_into(got, response)
    assert got == b"12345"
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert transport.open_connections == 0


async def test_a_server_reading_nothing_is_write_timeout_and_the_socket_is_closed_at_once(
    serve: Serve, transports: MakeTransport, spy: Spy
) -> None:
    async def read_nothing(peer: Peer) -> None:
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # no autotuned megabytes
        await asyncio.Event().wait()

    server = await serve(read_nothing)
    transport = transports()
    big = httpx.Request(
        "POST", server.url(), content=bytes(16 * 1024 * 1024), extensions=bounds(write=0.1)
    )
    with pytest.raises(httpx.WriteTimeout) as caught:
        await transport.handle_async_request(big)
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert transport.open_connections == 0
    await spy.until(lambda: spy.lost == 1)  # not left open, flushing what nobody reads


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listen queue is full: Linux drops the SYNs that come next, so connects hang."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(8):
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.skip("the listen queue never filled: this kernel answers every SYN")
        yield port
    finally:
        for sock in [listener, *fillers]:
            sock.close()


async def test_a_connect_that_hangs_past_its_bound_is_connect_timeout(
    full_backlog: int, transports: MakeTransport
) -> None:
    transport = transports()
    with pytest.raises(httpx.ConnectTimeout) as caught:
        await transport.handle_async_request(get(f"http://127.0.0.1:{full_backlog}/x", connect=0.1))
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert transport.open_connections == 0


async def test_a_refused_connection_is_connect_error_chained_to_the_refusal(
    transports: MakeTransport,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
    transport = transports()
    with pytest.raises(httpx.ConnectError) as caught:
        await transport.handle_async_request(get(f"http://127.0.0.1:{port}/x"))
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert transport.open_connections == 0


# garbage on the wire


async def test_an_answer_that_is_not_http_is_remote_protocol_error_from_the_parser(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(answering(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    transport = transports()
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        await transport.handle_async_request(get(server.url()))
    assert isinstance(caught.value.__cause__, httptools.HttpParserError)
    assert transport.open_connections == 0


async def test_a_body_cut_short_of_its_length_is_remote_protocol_error_while_reading(
    serve: Serve, transports: MakeTransport
) -> None:
    async def cut(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n1234")

    server = await serve(cut)
    transport = transports()
    response = await transport.handle_async_request(get(server.url()))
    got = bytearray()
    with pytest.raises(httpx.RemoteProtocolError, match="before the answer ended"):
        await read_into(got, response)
    assert got == b"1234"
    assert transport.open_connections == 0


async def test_a_connection_reset_mid_body_is_read_error_chained_to_the_reset(
    serve: Serve, transports: MakeTransport
) -> None:
    # A reset is the kernel's ECONNRESET on the next recv: asyncio hands connection_lost that
    # ConnectionResetError, which is ReadError's (a clean close, exc None, is RemoteProtocolError).
    headed = asyncio.Event()

    async def reset(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await headed.wait()
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.writer.transport.abort()  # closes with SO_LINGER 0: an RST, not a FIN

    server = await serve(reset)
    transport = transports()
    response = await transport.handle_async_request(get(server.url()))
    headed.set()
    got = bytearray()
    with pytest.raises(httpx.ReadError) as caught:
        await read_into(got, response)
    assert got == b"12345"
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert transport.open_connections == 0


async def test_two_answers_to_one_request_return_the_first_and_end_the_connection(
    serve: Serve, transports: MakeTransport
) -> None:
    extra = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"
    server = await serve(by_connection(answering(OK + extra), always(OK)))
    transport = transports()
    response, body = await exchange(transport, get(server.url()))
    assert (response.status_code, response.headers["content-length"], body) == (200, "2", b"hi")
    await within(server.peers[0].ended.wait())
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 2
    assert [seen.connection for seen in server.requests] == [1, 2]


async def test_switching_protocols_is_remote_protocol_error(
    serve: Serve, transports: MakeTransport
) -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
    server = await serve(answering(switch + b"\r\n\x81\x05hello"))
    transport = transports()
    with pytest.raises(httpx.RemoteProtocolError, match="switched protocols") as caught:
        await transport.handle_async_request(get(server.url()))
    assert isinstance(caught.value.__cause__, httptools.HttpParserUpgrade)
    assert transport.open_connections == 0


# flow control


async def test_a_large_body_read_slowly_arrives_whole_and_pauses_the_socket(
    transports: MakeTransport, spy: Spy
) -> None:
    payload = random.Random(4).randbytes(4 * 1024 * 1024)

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=payload)

    app = web.Application()
    app.router.add_get("/large", large)
    transport = transports()
    async with TestServer(app, host="127.0.0.1") as server:
        response = await transport.handle_async_request(get(str(server.make_url("/large"))))
        await spy.until(lambda: any(read.paused_after for read in spy.reads))
        got = bytearray()
        async for chunk in response.aiter_raw():
            got += chunk
            await asyncio.sleep(0)  # a slow reader: the socket gets a turn between chunks
    assert len(got) == len(payload) and bytes(got) == payload
    assert not any(read.paused_before for read in spy.reads)  # no read while paused
    assert max(read.size for read in spy.reads) <= ONE_READ
    assert max(read.buffered for read in spy.reads) <= HIGH_WATER + ONE_READ


# TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("wire-tls"))


@pytest.fixture
async def tls_server(serve: Serve, certificate: tuple[Path, Path]) -> Server:
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(*certificate)
    return await serve(always(OK), tls=served)


async def test_tls_with_the_process_context_refuses_a_self_signed_certificate(
    tls_server: Server, transports: MakeTransport
) -> None:
    transport = transports(context=client_context())
    with pytest.raises(httpx.ConnectError) as caught:
        await transport.handle_async_request(get(tls_server.url()))
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert transport.open_connections == 0


async def test_tls_with_a_context_trusting_the_certificate_works_and_keeps_the_connection(
    tls_server: Server, transports: MakeTransport, certificate: tuple[Path, Path]
) -> None:
    trusting = ssl.create_default_context(cadata=certificate[0].read_text())
    transport = transports(context=trusting)
    for _ in range(2):
        response, body = await exchange(transport, get(tls_server.url()))
        assert (response.status_code, body) == (200, b"hi")
    assert tls_server.accepted == 1 and len(tls_server.requests) == 2


async def test_a_transport_without_a_tls_context_refuses_https(
    tls_server: Server, transports: MakeTransport
) -> None:
    transport = transports()
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(get(tls_server.url()))
    assert (tls_server.accepted, transport.open_connections) == (0, 0)


# refusals


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "a\nb", "a\rb"])
async def test_a_header_with_a_line_break_is_refused_and_nothing_is_sent(
    serve: Serve, transports: MakeTransport, value: str
) -> None:
    server = await serve(always(OK))
    transport = transports()
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    bad = httpx.Request("GET", server.url(), headers={"X-Bad": value}, extensions=bounds())
    with pytest.raises(httpx.LocalProtocolError):
        await transport.handle_async_request(bad)
    assert (await exchange(transport, get(server.url())))[1] == b"hi"  # on the same connection
    assert server.accepted == 1
    assert [seen.line for seen in server.requests] == [b"GET /x HTTP/1.1"] * 2


async def test_a_head_request_is_refused_before_connecting(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(always(OK))
    transport = transports()
    with pytest.raises(httpx.UnsupportedProtocol, match="HEAD"):
        await transport.handle_async_request(
            httpx.Request("HEAD", server.url(), extensions=bounds())
        )
    assert (server.accepted, transport.open_connections) == (0, 0)


@pytest.mark.parametrize("scheme", ["ftp", "ws", "file"])
async def test_a_url_that_is_not_http_is_refused_before_connecting(
    serve: Serve, transports: MakeTransport, scheme: str
) -> None:
    server = await serve(always(OK))
    transport = transports()
    with pytest.raises(httpx.UnsupportedProtocol, match="http or https"):
        await transport.handle_async_request(get(f"{scheme}://127.0.0.1:{server.port}/x"))
    assert (server.accepted, transport.open_connections) == (0, 0)


async def test_aclose_closes_every_connection_idle_or_busy(
    serve: Serve, transports: MakeTransport
) -> None:
    server = await serve(always(OK))
    transport = transports()
    busy = await transport.handle_async_request(get(server.url()))
    assert (await exchange(transport, get(server.url())))[1] == b"hi"  # the second, now idle
    assert (server.accepted, transport.open_connections) == (2, 2)
    await transport.aclose()
    await within(asyncio.gather(*(peer.ended.wait() for peer in server.peers)))
    assert transport.open_connections == 0
    await busy.aclose()


# cancellation


async def test_a_request_cancelled_while_awaiting_its_answer_leaves_no_connection_open(
    serve: Serve, transports: MakeTransport
) -> None:
    arrived = asyncio.Event()

    async def sit_on_it(peer: Peer) -> None:
        await peer.request()
        arrived.set()
        await peer.until_closed()

    server = await serve(by_connection(sit_on_it, always(OK)))
    transport = transports()
    task = asyncio.create_task(transport.handle_async_request(get(server.url())))
    await within(arrived.wait())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.open_connections == 0
    await within(server.peers[0].ended.wait())
    assert (await exchange(transport, get(server.url())))[1] == b"hi"
    assert server.accepted == 2
