"""The one translation of what a transport raises, and the whole-request bound."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from poller.http.body import read_answer
from poller.http.failures import (
    NoAnswer,
    TimedOut,
    TransportFailed,
    answer_within,
    no_answer,
)
from poller.http.transport import pooled_transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def chained(outer: Exception, cause: BaseException) -> Exception:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (httpx.ConnectError("refused"), TransportFailed, "ConnectError"),
        (httpx.ReadError("reset"), TransportFailed, "ReadError"),
        (httpx.RemoteProtocolError("not http"), TransportFailed, "RemoteProtocolError"),
        (httpx.ConnectTimeout("slow"), TimedOut, "ConnectTimeout"),
        (httpx.ReadTimeout("slow"), TimedOut, "ReadTimeout"),
        (httpx.PoolTimeout("busy"), TimedOut, "PoolTimeout"),
        # The OSError the transport chained says more than httpx's name for it.
        (
            chained(httpx.ConnectError("x"), ConnectionRefusedError(111, "refused")),
            TransportFailed,
            "ConnectionRefusedError",
        ),
        (
            chained(httpx.ReadError("x"), ConnectionResetError(104, "reset")),
            TransportFailed,
            "ConnectionResetError",
        ),
        # A timeout's cause is asyncio's TimeoutError: httpx's name is the one that says which.
        (chained(httpx.ConnectTimeout("x"), TimeoutError()), TimedOut, "ConnectTimeout"),
        (chained(httpx.ReadError("x"), ValueError("not an OSError")), TransportFailed, "ReadError"),
        (TimeoutError(), TimedOut, "TimeoutError"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
async def test_each_transport_error_is_one_of_our_failures_with_a_short_reason(
    error: Exception, kind: type[NoAnswer], reason: str
) -> None:
    assert (type(no_answer(error)), no_answer(error).reason) == (kind, reason)

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    transport = httpx.MockTransport(handler)
    with pytest.raises(NoAnswer) as caught:
        async with answer_within(5.0):
            await transport.handle_async_request(httpx.Request("GET", "https://x.example/"))
    assert type(caught.value) is kind
    assert caught.value.reason == reason
    assert caught.value.error is error
    assert caught.value.__cause__ is error


async def test_the_whole_request_bound_is_a_timeout_of_its_own() -> None:
    never = asyncio.Event()

    async def stall(request: httpx.Request) -> httpx.Response:
        await never.wait()
        return httpx.Response(200)

    transport = httpx.MockTransport(stall)
    with pytest.raises(TimedOut) as caught:
        async with answer_within(0.05):
            await transport.handle_async_request(httpx.Request("GET", "https://x.example/"))
    assert caught.value.reason == "TimeoutError"
    assert isinstance(caught.value.error, TimeoutError)


async def test_without_a_bound_only_the_transport_can_time_out() -> None:
    async with answer_within(None):
        await asyncio.sleep(0)
    with pytest.raises(TimedOut, match="ReadTimeout"):
        async with answer_within(None):
            raise httpx.ReadTimeout("slow")


async def test_errors_that_are_not_the_transports_pass_through_untouched() -> None:
    with pytest.raises(ValueError, match="ours"):
        async with answer_within(5.0):
            raise ValueError("ours")
    task = asyncio.create_task(asyncio.Event().wait())

    async def cancelled() -> None:
        async with answer_within(5.0):
            await task

    waiter = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    task.cancel()


# over real loopback connections, through the pooled transport


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve raw TCP on 127.0.0.1 with the test's handler; return the URL to ask."""
    servers: list[asyncio.Server] = []

    async def serve(handler: Handler) -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


async def ask(url: str, seconds: float = 5.0) -> None:
    transport = pooled_transport(httpx.Limits(max_connections=1), verify=False)
    try:
        async with answer_within(seconds):
            response = await transport.handle_async_request(httpx.Request("GET", url))
            await read_answer(response, 1_000_000)  # closes the response, however it ends
    finally:
        await transport.aclose()


async def test_a_refused_connection_says_so_not_connect_timeout() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransportFailed) as caught:
        await ask(f"http://127.0.0.1:{port}/x")
    assert caught.value.reason == "ConnectionRefusedError"
    assert isinstance(caught.value.error, httpx.ConnectError)


async def test_a_server_hanging_up_is_a_transport_failure(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    with pytest.raises(TransportFailed, match="RemoteProtocolError"):
        await ask(await raw_server(hang_up))


async def test_an_answer_that_is_not_http_is_a_transport_failure(
    raw_server: Callable[[Handler], Awaitable[str]],
) -> None:
    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    with pytest.raises(TransportFailed):
        await ask(await raw_server(garble))
