"""The one bounded read: the cap on the wire and inflated, strict (Twilio) and cut (sinks)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from poller.http.body import Answer, read_answer
from poller.http.failures import BadEncoding, BodyTooLarge, UndecodableBody

CAP = 1000


class Chunks(httpx.AsyncByteStream):
    """A body served in the given chunks, counting what was pulled and whether it was closed."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.pulled = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def answer_of(
    chunks: Sequence[bytes], headers: dict[str, str] | None = None, status: int = 200
) -> tuple[httpx.Response, Chunks]:
    stream = Chunks(chunks)
    return httpx.Response(status, headers=headers or {}, stream=stream), stream


def pieces(data: bytes, size: int = 100) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_a_body_of_exactly_the_cap_is_read_whole_and_the_response_closed() -> None:
    response, stream = answer_of(pieces(b"x" * CAP), {"Content-Length": str(CAP)})
    answer = await read_answer(response, CAP)
    assert answer == Answer(200, response.headers, b"x" * CAP)
    assert stream.closed


async def test_one_byte_past_the_cap_on_the_wire_is_too_large_and_stops_the_read() -> None:
    response, stream = answer_of([b"x" * 600, b"x" * 401, b"never read"])
    with pytest.raises(BodyTooLarge) as caught:
        await read_answer(response, CAP)
    assert (caught.value.reason, caught.value.inflated, caught.value.max_bytes) == (
        "body_too_large",
        False,
        CAP,
    )
    assert stream.pulled == 2
    assert stream.closed


async def test_a_declared_length_past_the_cap_is_refused_before_any_chunk_is_read() -> None:
    response, stream = answer_of([b"x"], {"Content-Length": str(CAP + 1)})
    with pytest.raises(BodyTooLarge):
        await read_answer(response, CAP)
    assert stream.pulled == 0
    assert stream.closed


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "raw-deflate"])
async def test_gzip_and_deflate_are_inflated_up_to_exactly_the_cap(encoding: str) -> None:
    body = bytes(range(256)) * 3 + b"y" * (CAP - 768)
    if encoding == "deflate":
        packed = zlib.compress(body)
    elif encoding == "raw-deflate":  # deflate without the zlib header, as some servers send it
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed, encoding = packer.compress(body) + packer.flush(), "deflate"
    else:
        packed = gzip.compress(body)
    response, _ = answer_of(pieces(packed, 37), {"Content-Encoding": encoding})
    assert (await read_answer(response, CAP)).content == body


async def test_an_inflation_bomb_stops_at_the_cap_having_inflated_no_more() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB in about 64 KiB
    assert len(bomb) < 100_000
    response, stream = answer_of(pieces(bomb, 16 * 1024), {"Content-Encoding": "gzip"})
    with pytest.raises(BodyTooLarge) as caught:
        await read_answer(response, 100_000)
    assert (caught.value.reason, caught.value.inflated) == ("inflated_body_too_large", True)
    assert stream.pulled == 1  # the first chunk already unfolds past the cap
    assert stream.closed


async def test_an_encoding_that_was_not_asked_for_is_refused() -> None:
    response, stream = answer_of([b"\x1b"], {"Content-Encoding": "br"})
    with pytest.raises(BadEncoding, match="bad_encoding"):
        await read_answer(response, CAP)
    assert stream.closed


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_inflate_is_undecodable(encoding: str) -> None:
    response, _ = answer_of([b"this is not compressed at all"], {"Content-Encoding": encoding})
    with pytest.raises(UndecodableBody) as caught:
        await read_answer(response, CAP)
    assert isinstance(caught.value.__cause__, zlib.error)


async def test_a_gzip_body_garbled_after_its_header_is_undecodable() -> None:
    garbled = gzip.compress(b"z" * 500)[:10] + b"\xff" * 20
    response, stream = answer_of([garbled], {"Content-Encoding": "gzip"})
    with pytest.raises(UndecodableBody):
        await read_answer(response, CAP)
    assert stream.closed


async def test_cut_keeps_the_first_bytes_and_leaves_the_rest_unread() -> None:
    response, stream = answer_of([b"a" * 600, b"b" * 600, b"c" * 600], {"Content-Length": "1800"})
    answer = await read_answer(response, CAP, cut=True)
    assert answer.content == b"a" * 600 + b"b" * 400
    assert stream.pulled == 2
    assert stream.closed


async def test_cut_stops_an_inflation_bomb_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    response, stream = answer_of(pieces(bomb, 16 * 1024), {"Content-Encoding": "gzip"})
    answer = await read_answer(response, CAP, cut=True)
    assert answer.content == b"\0" * CAP
    assert stream.pulled == 1


async def test_cut_reads_an_unknown_encoding_as_it_is() -> None:
    response, _ = answer_of([b"opaque"], {"Content-Encoding": "br"})
    assert (await read_answer(response, CAP, cut=True)).content == b"opaque"


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b'{"code": 50035}', {"code": 50035}), (b"[1, 2]", {}), (b"not json", {}), (b"", {})],
)
def test_json_object_is_the_body_when_it_is_an_object(
    content: bytes, expected: dict[str, object]
) -> None:
    assert Answer(400, httpx.Headers(), content).json_object() == expected


@pytest.mark.parametrize(
    ("status", "success"), [(199, False), (200, True), (299, True), (300, False)]
)
def test_is_success_is_any_2xx(status: int, success: bool) -> None:
    assert Answer(status, httpx.Headers(), b"").is_success is success
