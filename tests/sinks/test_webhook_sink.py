"""The webhook sink: contract body and headers on a real receiver, and every answer's meaning."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from poller import __version__
from poller.config import WebhookSinkConfig
from poller.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.http.wire import WireTransport
from poller.sinks.webhook import WebhookSink, encode_body
from tests.sink_contract_cases import SECRET, make_event

NOW = 1_795_000_000.0


@dataclass(frozen=True)
class Received:
    body: bytes
    headers: dict[str, str]
    peer_port: int


@dataclass
class Receiver:
    url: str = ""
    status: int = 204
    received: list[Received] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        state.received.append(
            Received(
                body=await request.read(),
                headers={k.lower(): v for k, v in request.headers.items()},
                peer_port=peer[1] if peer else -1,
            )
        )
        return web.Response(status=state.status, text="thanks")

    app = web.Application()
    app.router.add_post("/hooks/{token}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/hooks/tok-9f8e7d"
    yield state
    await runner.cleanup()


def _config(url: str, **overrides: Any) -> WebhookSinkConfig:
    return WebhookSinkConfig.model_validate(
        {"name": "ops", "type": "webhook", "url": url, **overrides}
    )


@pytest.fixture
async def sinks() -> AsyncIterator[list[WebhookSink]]:
    made: list[WebhookSink] = []
    yield made
    for sink in made:
        await sink.aclose()


def _sink(
    made: list[WebhookSink],
    url: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] | None = None,
    **overrides: Any,
) -> WebhookSink:
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    sink = WebhookSink(_config(url, **overrides), transport=transport, **kwargs)
    made.append(sink)
    return sink


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve raw TCP with a handler of the test's; return the URL to post to."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[None]] = set()

    async def serve(handler: Handler) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await reader.readuntil(b"\r\n\r\n")
                await handler(reader, writer)
            except ConnectionError:
                pass  # the sink hung up first
            finally:
                writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks/x"

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)


def _answering(
    status: int, headers: dict[str, str] | None = None, text: str = ""
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers, text=text)

    return httpx.MockTransport(handler), seen


MOCK_URL = "https://receiver.example/hooks/tok-9f8e7d"


async def test_posts_the_contract_body_and_headers_to_a_real_receiver(
    receiver: Receiver, sinks: list[WebhookSink]
) -> None:
    sink = _sink(sinks, receiver.url, headers={"x-team": "ops"}, clock=lambda: NOW + 0.9)
    event = make_event()
    await sink.send(event)
    (got,) = receiver.received
    assert json.loads(got.body) == event.payload(include_data=True)
    assert got.body == encode_body(event, include_data=True)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == event.id
    assert got.headers["webhook-timestamp"] == str(int(NOW))
    assert got.headers["user-agent"] == f"twilio-proxy-poller/{__version__}"
    assert got.headers["x-team"] == "ops"
    assert "webhook-signature" not in got.headers


async def test_signature_verifies_with_the_standard_webhooks_library(
    receiver: Receiver, sinks: list[WebhookSink]
) -> None:
    sink = _sink(sinks, receiver.url, secret=SECRET)
    event = make_event()
    await sink.send(event)
    (got,) = receiver.received
    assert Webhook(SECRET).verify(got.body, got.headers) == event.payload(include_data=True)
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(got.body + b" ", got.headers)


async def test_signature_uses_the_timestamp_of_this_attempt(sinks: list[WebhookSink]) -> None:
    times = iter([NOW, NOW + 42.5])
    transport, seen = _answering(500)
    sink = _sink(sinks, MOCK_URL, transport=transport, clock=lambda: next(times), secret=SECRET)
    event = make_event()
    for _ in range(2):
        with pytest.raises(RetryableDeliveryError):
            await sink.send(event)
    for request, when in zip(seen, (NOW, NOW + 42.5), strict=True):
        stamp = int(when)
        assert request.headers["webhook-timestamp"] == str(stamp)
        expected = Webhook(SECRET).sign(
            event.id, datetime.fromtimestamp(stamp, tz=UTC), request.content.decode()
        )
        assert request.headers["webhook-signature"] == expected


async def test_body_is_compact_utf8_json(receiver: Receiver, sinks: list[WebhookSink]) -> None:
    sink = _sink(sinks, receiver.url)
    await sink.send(make_event(body="héllo ✓ 你好"))
    body = receiver.received[0].body
    assert "héllo ✓ 你好".encode() in body
    assert b"\\u" not in body
    assert body.startswith(b'{"type":"interaction.created","timestamp":"2026-11-27T10:00:05Z",')


async def test_include_data_false_leaves_the_interaction_data_out(
    receiver: Receiver, sinks: list[WebhookSink]
) -> None:
    sink = _sink(sinks, receiver.url, include_data=False)
    await sink.send(make_event())
    interaction = json.loads(receiver.received[0].body)["data"]["interaction"]
    assert "data" not in interaction
    assert interaction["type"] == "message"


async def test_sends_reuse_one_pooled_connection(
    receiver: Receiver, sinks: list[WebhookSink]
) -> None:
    sink = _sink(sinks, receiver.url)
    for _ in range(3):
        await sink.send(make_event())
    ports = {got.peer_port for got in receiver.received}
    assert len(receiver.received) == 3
    assert len(ports) == 1


async def test_refused_connection_is_retryable(sinks: list[WebhookSink]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = _sink(sinks, f"http://127.0.0.1:{port}/hooks/x")
    with pytest.raises(
        RetryableDeliveryError, match=r"'ops': transport failure \(ConnectionRefusedError\)"
    ):
        await sink.send(make_event())


async def test_sends_go_over_the_wire_transport_unless_one_is_injected(
    sinks: list[WebhookSink],
) -> None:
    # httpx's own async transport costs about twice the CPU per event (bench_delivery).
    default = _sink(sinks, MOCK_URL)
    transport, _ = _answering(204)
    injected = _sink(sinks, MOCK_URL, transport=transport)
    assert isinstance(default._transport, WireTransport)
    assert injected._transport is transport


async def test_credentials_in_the_url_go_as_http_basic_and_leave_the_url(
    sinks: list[WebhookSink],
) -> None:
    transport, seen = _answering(204)
    url = "https://hook%40ops:p%3Ass@receiver.example/hooks/x"
    await _sink(sinks, url, transport=transport).send(make_event())
    (request,) = seen
    assert request.headers["authorization"] == "Basic aG9va0BvcHM6cDpzcw=="  # hook@ops:p:ss
    assert request.url.userinfo == b""
    assert str(request.url) == "https://receiver.example/hooks/x"


async def test_configured_headers_replace_ours_whatever_their_case(
    sinks: list[WebhookSink],
) -> None:
    transport, seen = _answering(204)
    sink = _sink(sinks, MOCK_URL, transport=transport, headers={"User-Agent": "relay/2"})
    await sink.send(make_event())
    assert seen[0].headers.get_list("user-agent") == ["relay/2"]
    assert "authorization" not in seen[0].headers


async def test_a_receiver_hanging_up_is_a_transport_failure_not_a_timeout(
    sinks: list[WebhookSink], raw_server: Callable[[Handler], Awaitable[str]]
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    sink = _sink(sinks, await raw_server(hang_up))
    with pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert str(info.value) == "webhook sink 'ops': transport failure (RemoteProtocolError)"
    assert info.value.status is None


async def test_an_answer_that_is_not_http_is_a_transport_failure(
    sinks: list[WebhookSink], raw_server: Callable[[Handler], Awaitable[str]]
) -> None:
    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    sink = _sink(sinks, await raw_server(garble))
    with pytest.raises(RetryableDeliveryError, match=r"'ops': transport failure \(") as info:
        await sink.send(make_event())
    assert info.value.__cause__ is not None


async def test_a_trickling_answer_is_cut_at_the_timeout_of_the_whole_request(
    sinks: list[WebhookSink], raw_server: Callable[[Handler], Awaitable[str]]
) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
        while True:  # a byte well within every per-read timeout, never the whole answer
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.02)

    sink = _sink(sinks, await raw_server(trickle), timeout_seconds=0.3)
    with pytest.raises(RetryableDeliveryError, match=r"'ops': no answer within 0.3 s"):
        async with asyncio.timeout(5):  # per-read timeouts alone would wait for ever
            await sink.send(make_event())


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
async def test_any_2xx_is_success(sinks: list[WebhookSink], status: int) -> None:
    transport, seen = _answering(status)
    await _sink(sinks, MOCK_URL, transport=transport).send(make_event())
    assert len(seen) == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_not_followed_and_retryable(
    sinks: list[WebhookSink], status: int
) -> None:
    transport, seen = _answering(status, {"location": "https://elsewhere.example/"})
    sink = _sink(sinks, MOCK_URL, transport=transport)
    with capture_logs() as logs, pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert info.value.status == status
    assert [r.url.host for r in seen] == ["receiver.example"]
    assert any(e["event"] == "webhook_redirect_not_followed" for e in logs)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 422])
async def test_other_4xx_are_permanent(sinks: list[WebhookSink], status: int) -> None:
    transport, _ = _answering(status)
    with pytest.raises(PermanentDeliveryError) as info:
        await _sink(sinks, MOCK_URL, transport=transport).send(make_event())
    assert info.value.status == status


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
async def test_timeouts_rate_limits_and_5xx_are_retryable(
    sinks: list[WebhookSink], status: int
) -> None:
    transport, _ = _answering(status)
    with pytest.raises(RetryableDeliveryError) as info:
        await _sink(sinks, MOCK_URL, transport=transport).send(make_event())
    assert info.value.status == status
    assert info.value.retry_after is None


async def test_gone_disables_the_sink(sinks: list[WebhookSink]) -> None:
    transport, _ = _answering(410)
    with pytest.raises(SinkDisabledError) as info:
        await _sink(sinks, MOCK_URL, transport=transport).send(make_event())
    assert info.value.status == 410


@pytest.mark.parametrize(
    ("status", "value", "expected"),
    [
        (429, "120", 120.0),
        (503, "0", 0.0),
        (429, formatdate(NOW + 60, usegmt=True), 60.0),
        (503, "soon", None),
    ],
)
async def test_retry_after_is_parsed_against_the_clock(
    sinks: list[WebhookSink], status: int, value: str, expected: float | None
) -> None:
    transport, _ = _answering(status, {"retry-after": value})
    sink = _sink(sinks, MOCK_URL, transport=transport, clock=lambda: NOW)
    with pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert info.value.retry_after == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.WriteError("rst")]
)
async def test_transport_errors_are_retryable_and_chained(
    sinks: list[WebhookSink], exc: httpx.TransportError
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    sink = _sink(sinks, MOCK_URL, transport=httpx.MockTransport(handler))
    with pytest.raises(RetryableDeliveryError, match="'ops'") as info:
        await sink.send(make_event())
    assert info.value.__cause__ is exc
    assert info.value.status is None


async def test_errors_and_logs_never_carry_secret_url_or_bodies(sinks: list[WebhookSink]) -> None:
    answer = "receiver-says-" + "z" * 1000
    errors: list[str] = []
    with capture_logs() as logs:
        for status in (301, 400, 410, 500):
            transport, _ = _answering(status, text=answer)
            sink = _sink(sinks, MOCK_URL, transport=transport, secret=SECRET)
            with pytest.raises(DeliveryError) as info:
                await sink.send(make_event(body="private words"))
            errors.append(str(info.value))
    for message in errors:
        assert "'ops'" in message
        assert "HTTP" in message
    text = repr(logs) + "\n".join(errors)
    for forbidden in (SECRET, SECRET.removeprefix("whsec_"), "tok-9f8e7d", "private words"):
        assert forbidden not in text
    assert "receiver-says" not in "\n".join(errors)
    answered = [e for e in logs if e["event"] == "webhook_answer"]
    assert len(answered) == 4
    assert all(e["answer"] == answer[:200] and e["log_level"] == "debug" for e in answered)


async def test_webhooks_never_digest(sinks: list[WebhookSink]) -> None:
    assert _sink(sinks, MOCK_URL).digest_threshold is None


async def test_send_digest_posts_each_event_in_order(sinks: list[WebhookSink]) -> None:
    transport, seen = _answering(204)
    events = [make_event() for _ in range(3)]
    await _sink(sinks, MOCK_URL, transport=transport).send_digest(events)
    assert [r.headers["webhook-id"] for r in seen] == [e.id for e in events]
