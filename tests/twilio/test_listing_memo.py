"""The Sessions list's pages that Twilio answers with the same bytes are not built again."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog

from poller.twilio.client import ProxyClient
from poller.twilio.records import Session
from tests.client_settings import BASE, ClientSettings

SERVICE = "KS" + "a" * 32
SESSIONS = f"/v1/Services/{SERVICE}/Sessions"
FIRST = f"{SESSIONS}?PageSize=2"
SECOND = f"{SESSIONS}?PageSize=2&Page=1"


# Two sessions a page, so that a listing of three has a second page.
Settings = functools.partial(ClientSettings, page_size=2, max_concurrency=2)


def session(sid: str, status: str = "open") -> dict[str, Any]:
    return {"sid": sid, "service_sid": SERVICE, "status": status, "date_updated": None}


class Pages:
    """Answers each page's path+query with the items set for it (as JSON, every time anew)."""

    def __init__(self) -> None:
        self.items: dict[str, list[Any]] = {}
        self.requests: list[str] = []
        self.last = SECOND  # the page with no next_page_url

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        self.requests.append(path)
        following = None if path == self.last else f"{BASE}{SECOND}"
        meta = {"key": "sessions", "next_page_url": following}
        body = json.dumps({"sessions": self.items[path], "meta": meta}).encode()
        return httpx.Response(200, content=body)


@pytest.fixture
def pages() -> Pages:
    answers = Pages()
    answers.items[FIRST] = [session("KC1"), session("KC2")]
    answers.items[SECOND] = [session("KC3")]
    return answers


@pytest.fixture
async def client(pages: Pages) -> AsyncIterator[ProxyClient]:
    proxy = ProxyClient(Settings(), transport=httpx.MockTransport(pages))
    yield proxy
    await proxy.aclose()


async def test_the_same_bytes_give_the_same_records_without_building_them_again(
    client: ProxyClient, pages: Pages
) -> None:
    first = await client.list_sessions(SERVICE)
    again = await client.list_sessions(SERVICE)
    assert pages.requests == [FIRST, SECOND, FIRST, SECOND]  # every page is still asked for
    assert [s.sid for s in again] == ["KC1", "KC2", "KC3"]
    assert again == first
    assert all(a is b for a, b in zip(again, first, strict=True))


async def test_a_page_whose_bytes_changed_is_read_again_and_only_that_page(
    client: ProxyClient, pages: Pages
) -> None:
    first = await client.list_sessions(SERVICE)
    pages.items[SECOND] = [session("KC3", status="closed")]
    again = await client.list_sessions(SERVICE)
    assert [s.status for s in again] == ["open", "open", "closed"]
    assert again[0] is first[0] and again[1] is first[1]
    assert again[2] == Session.from_api(session("KC3", status="closed"))


async def test_a_first_page_that_changed_its_next_page_url_is_followed_as_answered(
    client: ProxyClient, pages: Pages
) -> None:
    await client.list_sessions(SERVICE)
    pages.items[FIRST] = [session("KC1")]
    pages.last = FIRST
    pages.requests.clear()
    assert [s.sid for s in await client.list_sessions(SERVICE)] == ["KC1"]
    assert pages.requests == [FIRST]


async def test_a_page_with_a_skipped_item_is_read_again_and_logs_it_each_time(
    client: ProxyClient, pages: Pages
) -> None:
    pages.items[SECOND] = [session("KC3"), {"no": "sid"}]
    with structlog.testing.capture_logs() as logs:
        await client.list_sessions(SERVICE)
        listed = await client.list_sessions(SERVICE)
    skipped = [entry for entry in logs if entry["event"] == "twilio_record_skipped"]
    assert len(skipped) == 2
    assert [s.sid for s in listed] == ["KC1", "KC2", "KC3"]
