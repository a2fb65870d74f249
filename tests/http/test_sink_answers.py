"""Every HTTP sink reads its answers through the one bounded read and names itself the same way."""

from __future__ import annotations

import functools
import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from poller import __version__
from poller.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from poller.sinks import Sink
from tests.sink_contract_cases import CASES, MemoryThreads, SinkCase, make_event

Answer = Callable[[httpx.Request], httpx.Response]
MIB = 1024 * 1024


@functools.cache
def bomb() -> bytes:
    """64 MiB of zeros gzipped to about 64 KiB, never held inflated here either."""
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    zeros = bytes(MIB)
    return b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()


class Unread(httpx.AsyncBaseTransport):
    """A mock transport that hands the body over as sent, unread (httpx.MockTransport reads and
    decodes it first: a bomb would unfold in the test, and bad gzip fail there)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await request.aread()
        return self.answer(request)


MakeSink = Callable[[Answer], tuple[Sink, Unread]]


@pytest.fixture(params=CASES, ids=lambda factory: factory.__name__.removesuffix("_case"))
def case(request: pytest.FixtureRequest) -> SinkCase:
    factory: Callable[[], SinkCase] = request.param
    return factory()


@pytest.fixture
async def make_sink(case: SinkCase) -> AsyncIterator[MakeSink]:
    """Build the case's sink over an :class:`Unread` transport; close every one at the end."""
    built: list[Sink] = []

    def make(answer: Answer) -> tuple[Sink, Unread]:
        transport = Unread(answer)
        built.append(case.build(transport, True, MemoryThreads()))
        return built[-1], transport

    yield make
    for sink in built:
        await sink.aclose()


def gzipped(status: int, body: bytes) -> Answer:
    # stream=, not content=: an httpx.Response given content reads (and inflates) it at once.
    return lambda request: httpx.Response(
        status, stream=httpx.ByteStream(body), headers={"content-encoding": "gzip"}
    )


async def test_every_sink_sends_our_user_agent(case: SinkCase, make_sink: MakeSink) -> None:
    sink, transport = make_sink(case.accept)
    await sink.send(make_event())
    assert transport.requests[0].headers["user-agent"] == f"twilio-proxy-poller/{__version__}"


async def test_a_refusal_whose_body_is_a_gzip_bomb_is_classified_by_its_status(
    make_sink: MakeSink,
) -> None:
    sink, _ = make_sink(gzipped(400, bomb()))
    tracemalloc.start()
    try:
        with pytest.raises(PermanentDeliveryError, match="HTTP 400"):
            await sink.send(make_event())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB  # the bomb never unfolded (64 MiB if it had)


async def test_an_answer_that_does_not_inflate_is_retried_as_a_transport_failure(
    make_sink: MakeSink,
) -> None:
    sink, _ = make_sink(gzipped(200, b"this was never gzip"))
    with pytest.raises(RetryableDeliveryError, match=r"transport failure \(undecodable_body\)"):
        await sink.send(make_event())


async def test_a_gzipped_error_code_is_read(make_sink: MakeSink, case: SinkCase) -> None:
    refused = case.refused(httpx.Request("POST", "https://x.example/"))
    sink, _ = make_sink(gzipped(refused.status_code, gzip.compress(refused.content)))
    with pytest.raises(DeliveryError) as plain:
        await case.build(Unread(case.refused), True, MemoryThreads()).send(make_event())
    with pytest.raises(DeliveryError) as packed:
        await sink.send(make_event())
    assert (type(packed.value), str(packed.value)) == (type(plain.value), str(plain.value))
