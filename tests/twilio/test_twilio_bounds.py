"""Bounded answers: bytes per page (on the wire and inflated), pages and records per listing."""

from __future__ import annotations

import functools
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from poller.config import Secret
from poller.config.models import TwilioConfig
from poller.errors import MalformedResponseError
from poller.observe.metrics import REGISTRY
from poller.twilio.body import AnswerLimits
from poller.twilio.client import ProxyClient
from tests.client_settings import ClientSettings

SERVICE = "KS" + "a" * 32
SESSION = "KC" + "a" * 32
INTERACTIONS = f"/v1/Services/{SERVICE}/Sessions/{SESSION}/Interactions"
SESSIONS = f"/v1/Services/{SERVICE}/Sessions"
RECORD: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "interaction_fetch.json").read_text()
)
KIB = 1024


Settings = functools.partial(
    ClientSettings, page_size=3, max_concurrency=2, retry_deadline_seconds=1.0
)


class Chunks(httpx.AsyncByteStream):
    """A body that streams in chunks, counting what the client pulled (and closing)."""

    def __init__(self, chunks: Callable[[], AsyncIterator[bytes]]) -> None:
        self._chunks = chunks
        self.pulled = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks():
            self.pulled += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def repeated(chunk: bytes, times: int) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(times):
            yield chunk

    return chunks


def once(body: bytes) -> Callable[[], AsyncIterator[bytes]]:
    return repeated(body, 1)


def page(items: list[Any], next_page_url: str | None = None, key: str = "interactions") -> bytes:
    return json.dumps({key: items, "meta": {"key": key, "next_page_url": next_page_url}}).encode()


def records(first: int, count: int) -> list[dict[str, Any]]:
    return [{**RECORD, "sid": f"KI{n:032x}"} for n in range(first, first + count)]


def client(answer: Callable[[httpx.Request], httpx.Response], **limits: int) -> ProxyClient:
    return ProxyClient(
        Settings(), transport=httpx.MockTransport(answer), limits=AnswerLimits(**limits)
    )


def counter(kind: str) -> float:
    labels = {"kind": kind}
    return REGISTRY.get_sample_value("poller_twilio_bad_responses_total", labels) or 0.0


async def refused(proxy: ProxyClient, kind: str, problem: str) -> MalformedResponseError:
    """List the session's interactions: a bad answer of ``kind``, logged and counted once."""
    before = counter(kind)
    with structlog.testing.capture_logs() as logs, pytest.raises(MalformedResponseError) as caught:
        await proxy.list_interactions(SERVICE, SESSION)
    await proxy.aclose()
    assert problem in str(caught.value)
    assert counter(kind) == before + 1
    assert [
        (line["event"], line.get("kind")) for line in logs if line["log_level"] == "warning"
    ] == [("twilio_bad_response", kind)]
    return caught.value


def streamed(stream: Chunks, headers: dict[str, str] | None = None) -> Callable[..., Any]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers or {}, stream=stream)

    return answer


async def test_a_gzip_bomb_stops_inflating_at_the_limit() -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * KIB), compresslevel=9)  # 64 MiB in ~64 KiB
    stream = Chunks(repeated(bomb, 1))
    proxy = client(streamed(stream, {"Content-Encoding": "gzip"}), max_page_bytes=256 * KIB)
    await refused(proxy, "inflated_body_too_large", "inflates to more than 262144 bytes")
    assert stream.closed


async def test_a_body_too_large_on_the_wire_is_not_read_past_the_limit() -> None:
    stream = Chunks(repeated(b" " * (16 * KIB), 10_000))  # 160 MiB of blanks
    proxy = client(streamed(stream), max_page_bytes=256 * KIB)
    await refused(proxy, "body_too_large", "is larger than 262144 bytes (twilio.max_page_bytes)")
    assert stream.pulled <= 256 * KIB + 16 * KIB
    assert stream.closed


async def test_a_declared_content_length_over_the_limit_is_refused_before_reading() -> None:
    stream = Chunks(once(b"{}"))
    proxy = client(streamed(stream, {"Content-Length": str(1 << 30)}), max_page_bytes=256 * KIB)
    await refused(proxy, "body_too_large", "is larger than")
    assert stream.pulled == 0


async def test_a_page_just_within_the_limit_is_read_whole() -> None:
    body = page(records(0, 3))
    proxy = client(streamed(Chunks(once(body))), max_page_bytes=len(body))
    assert len(await proxy.list_interactions(SERVICE, SESSION)) == 3
    await proxy.aclose()


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
async def test_deflate_pages_are_inflated_in_chunks(wbits: int) -> None:
    packer = zlib.compressobj(wbits=wbits)
    packed = packer.compress(page(records(0, 3))) + packer.flush()
    halves = [packed[: len(packed) // 2], packed[len(packed) // 2 :]]

    async def chunks() -> AsyncIterator[bytes]:
        for half in halves:
            yield half

    proxy = client(streamed(Chunks(chunks), {"Content-Encoding": "deflate"}))
    assert len(await proxy.list_interactions(SERVICE, SESSION)) == 3
    await proxy.aclose()


async def test_an_encoding_never_asked_for_is_a_bad_answer() -> None:
    proxy = client(streamed(Chunks(once(b"x")), {"Content-Encoding": "br"}))
    await refused(proxy, "bad_encoding", "Content-Encoding that was not asked for")


async def test_a_broken_gzip_body_is_a_bad_answer() -> None:
    proxy = client(streamed(Chunks(once(b"not gzip")), {"Content-Encoding": "gzip"}))
    await refused(proxy, "bad_json", "has an undecodable body")


def endless(per_page: int) -> Callable[[httpx.Request], httpx.Response]:
    """Pages of ``per_page`` new interactions, each pointing at the next, for ever."""

    def answer(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("Page", "0"))
        body = page(records(n * per_page, per_page), f"{INTERACTIONS}?PageSize=3&Page={n + 1}")
        return httpx.Response(200, content=body)

    return answer


async def test_endless_pages_stop_at_the_interaction_cap() -> None:
    proxy = client(endless(3), max_interactions_per_session=10)
    error = await refused(
        proxy, "too_many_records", "more than 10 interactions (twilio.max_interactions_per_session)"
    )
    assert INTERACTIONS in str(error)


async def test_endless_pages_of_nothing_stop_at_the_page_cap() -> None:
    proxy = client(endless(0), max_pages=4)
    await refused(proxy, "too_many_pages", "more than 4 pages (twilio.max_pages)")


async def test_exactly_the_cap_of_interactions_is_accepted() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=page(records(0, 3)))

    proxy = client(answer, max_interactions_per_session=3)
    assert len(await proxy.list_interactions(SERVICE, SESSION)) == 3
    await proxy.aclose()


async def test_a_sessions_listing_has_its_own_cap() -> None:
    sessions = [{"sid": f"KC{n:032x}", "status": "open"} for n in range(5)]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=page(sessions, key="sessions"))

    proxy = client(answer, max_sessions_per_service=4, max_interactions_per_session=1)
    with pytest.raises(MalformedResponseError, match="more than 4 sessions"):
        await proxy.list_sessions(SERVICE)
    await proxy.aclose()


def test_the_config_defaults_are_the_clients() -> None:
    config = TwilioConfig(account_sid="AC" + "0" * 32, auth_token=Secret("t"))
    assert AnswerLimits.of(config) == AnswerLimits()
    custom = TwilioConfig(
        account_sid="AC" + "0" * 32,
        auth_token=Secret("t"),
        max_page_bytes=1 << 20,
        max_pages=7,
        max_interactions_per_session=8,
        max_sessions_per_service=9,
    )
    assert AnswerLimits.of(custom) == AnswerLimits(1 << 20, 7, 8, 9)
