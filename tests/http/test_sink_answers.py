"""Every HTTP sink reads its answers through the one bounded read and names itself the same way."""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from poller import __version__
from poller.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from poller.sinks import Sink
from tests.sink_contract_cases import CASES, MemoryThreads, SinkCase, make_event

Answer = Callable[[httpx.Request], httpx.Response]
MakeSink = Callable[[Answer], tuple[Sink, list[httpx.Request]]]
BOMB = gzip.compress(b"\0" * (256 * 1024 * 1024))  # 256 MiB in about 250 KiB


class Unread(httpx.AsyncBaseTransport):
    """A mock transport that hands the body over as sent, unread (httpx.MockTransport reads and
    decodes it first: a bomb would unfold in the test, and bad gzip fail there)."""

    def __init__(self, handler: Answer) -> None:
        self._handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return self._handler(request)


@pytest.fixture(params=CASES, ids=lambda factory: factory.__name__.removesuffix("_case"))
def case(request: pytest.FixtureRequest) -> SinkCase:
    factory: Callable[[], SinkCase] = request.param
    return factory()


@pytest.fixture
async def make_sink(case: SinkCase) -> AsyncIterator[MakeSink]:
    built: list[Sink] = []

    def make(answer: Answer) -> tuple[Sink, list[httpx.Request]]:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return answer(request)

        sink = case.build(Unread(handler), True, MemoryThreads())
        built.append(sink)
        return sink, seen

    yield make
    for sink in built:
        await sink.aclose()


def gzipped(status: int, body: bytes) -> Answer:
    # stream=, not content=: an httpx.Response given content reads (and inflates) it at once.
    return lambda request: httpx.Response(
        status, stream=httpx.ByteStream(body), headers={"content-encoding": "gzip"}
    )


async def test_every_sink_sends_our_user_agent(case: SinkCase, make_sink: MakeSink) -> None:
    sink, seen = make_sink(case.accept)
    await sink.send(make_event())
    assert seen[0].headers["user-agent"] == f"twilio-proxy-poller/{__version__}"


async def test_a_refusal_whose_body_is_a_gzip_bomb_is_classified_by_its_status(
    make_sink: MakeSink,
) -> None:
    sink, _ = make_sink(gzipped(400, BOMB))
    tracemalloc.start()
    try:
        with pytest.raises(PermanentDeliveryError, match="HTTP 400"):
            await sink.send(make_event())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024  # the bomb never unfolded (256 MiB if it had)


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
