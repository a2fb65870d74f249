"""The Twilio Proxy client against httpx.MockTransport, on a fake clock (nothing really waits)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import random
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web

from poller import __version__
from poller.errors import (
    CredentialsError,
    ForeignURLError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from poller.http.wire import WireTransport
from poller.observe.metrics import REGISTRY
from poller.twilio.body import AnswerLimits
from poller.twilio.client import ProxyClient
from tests.client_settings import ACCOUNT, BASE, TOKEN
from tests.client_settings import ClientSettings as Settings
from tests.clock import FakeClock

FIXTURES = Path(__file__).parents[1] / "fixtures"
SERVICE = "KS" + "a" * 32
OTHER_SERVICE = "KS" + "b" * 32
SESSION = "KC" + "a" * 32
INTERACTIONS = f"/v1/Services/{SERVICE}/Sessions/{SESSION}/Interactions"
SESSIONS = f"/v1/Services/{SERVICE}/Sessions"
FIRST = f"{INTERACTIONS}?PageSize=50"
CANARY = "CANARY-message-body-do-not-log"


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raises: type[Exception] | None = None

    def answer(self, request: httpx.Request) -> httpx.Response:
        if self.raises is not None:
            raise self.raises("scripted failure", request=request)  # type: ignore[call-arg]
        if self.content is not None:
            return httpx.Response(self.status, content=self.content, headers=self.headers)
        return httpx.Response(self.status, json=self.body, headers=self.headers)


class FakeTwilio:
    """Answers each path+query with its scripted replies in turn (the last one repeats)."""

    def __init__(self, time: FakeClock) -> None:
        self.time = time
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def on(self, path_and_query: str, *replies: Reply) -> None:
        self.routes[path_and_query] = list(replies)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(self.time.monotonic())
        replies = self.routes[request.url.raw_path.decode()]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return reply.answer(request)

    @property
    def paths(self) -> list[str]:
        return [r.url.raw_path.decode() for r in self.requests]


@dataclass
class Harness:
    time: FakeClock
    twilio: FakeTwilio
    client: ProxyClient


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Harness]]:
    clients: list[ProxyClient] = []

    def build(*, client_options: dict[str, Any] | None = None, **overrides: Any) -> Harness:
        time = FakeClock()
        twilio = FakeTwilio(time)
        client = ProxyClient(
            Settings(**overrides),
            transport=httpx.MockTransport(twilio),
            sleep=time.sleep,
            clock=time.monotonic,
            rng=random.Random(4),
            wall_clock=lambda: 1_800_000_000.0,
            **(client_options or {}),
        )
        clients.append(client)
        return Harness(time, twilio, client)

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    return make()


def interaction(sid: str | None, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((FIXTURES / "interaction_fetch.json").read_text())
    raw.update(sid=sid, **changes)
    return raw


def page(items: list[Any], next_page_url: str | None = None, key: str = "interactions") -> Any:
    return {
        key: items,
        "meta": {"key": key, "next_page_url": next_page_url, "page_size": 50, "page": 0},
    }


def ok(items: list[Any], next_page_url: str | None = None, key: str = "interactions") -> Reply:
    return Reply(body=page(items, next_page_url, key))


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total", labels) or 0.0


def http_date(unix: float) -> str:
    return format_datetime(datetime.fromtimestamp(unix, UTC), usegmt=True)


# paging


async def test_follows_next_page_urls_across_three_pages(h: Harness) -> None:
    h.twilio.on(FIRST, ok([interaction("KI1"), interaction("KI2")], f"{BASE}{INTERACTIONS}?p=2"))
    h.twilio.on(f"{INTERACTIONS}?p=2", ok([interaction("KI3")], f"{BASE}{INTERACTIONS}?p=3"))
    h.twilio.on(f"{INTERACTIONS}?p=3", ok([interaction("KI4"), interaction("KI5")]))
    records = await h.client.list_interactions(SERVICE, SESSION)
    assert [r.sid for r in records] == ["KI1", "KI2", "KI3", "KI4", "KI5"]
    assert h.twilio.paths == [FIRST, f"{INTERACTIONS}?p=2", f"{INTERACTIONS}?p=3"]


async def test_first_page_asks_for_the_configured_page_size(make: Callable[..., Harness]) -> None:
    h = make(page_size=37)
    h.twilio.on(f"{INTERACTIONS}?PageSize=37", ok([]))
    assert await h.client.list_interactions(SERVICE, SESSION) == []
    assert h.twilio.requests[0].url.params["PageSize"] == "37"


async def test_relative_next_page_url_resolves_against_base_url(h: Harness) -> None:
    h.twilio.on(FIRST, ok([interaction("KI1")], f"{INTERACTIONS}?PageToken=PT1"))
    h.twilio.on(f"{INTERACTIONS}?PageToken=PT1", ok([interaction("KI2")]))
    records = await h.client.list_interactions(SERVICE, SESSION)
    assert [r.sid for r in records] == ["KI1", "KI2"]
    assert str(h.twilio.requests[1].url) == f"{BASE}{INTERACTIONS}?PageToken=PT1"


async def test_same_origin_with_explicit_default_port_is_followed(h: Harness) -> None:
    h.twilio.on(FIRST, ok([], f"https://PROXY.twilio.com:443{INTERACTIONS}?p=2"))
    h.twilio.on(f"{INTERACTIONS}?p=2", ok([interaction("KI2")]))
    assert [r.sid for r in await h.client.list_interactions(SERVICE, SESSION)] == ["KI2"]


@pytest.mark.parametrize(
    "foreign",
    [
        f"https://evil.example{INTERACTIONS}?p=2",
        f"http://proxy.twilio.com{INTERACTIONS}?p=2",
        f"https://proxy.twilio.com:8443{INTERACTIONS}?p=2",
        f"https://someone:pw@proxy.twilio.com{INTERACTIONS}?p=2",
        f"//evil.example{INTERACTIONS}?p=2",
    ],
    ids=["host", "scheme", "port", "userinfo", "protocol-relative"],
)
async def test_foreign_next_page_url_is_refused_and_never_requested(
    h: Harness, foreign: str
) -> None:
    h.twilio.on(FIRST, ok([interaction("KI1")], foreign))
    before = counter("poller_twilio_bad_responses", kind="foreign_url")
    with pytest.raises(ForeignURLError, match="not followed") as caught:
        await h.client.list_interactions(SERVICE, SESSION)
    assert [str(r.url) for r in h.twilio.requests] == [f"{BASE}{FIRST}"]
    assert caught.value.url == INTERACTIONS
    assert counter("poller_twilio_bad_responses", kind="foreign_url") == before + 1


async def test_repeated_next_page_url_is_a_paging_loop(h: Harness) -> None:
    h.twilio.on(FIRST, ok([], f"{INTERACTIONS}?p=2"))
    h.twilio.on(f"{INTERACTIONS}?p=2", ok([], f"{INTERACTIONS}?PageSize=50"))
    with pytest.raises(MalformedResponseError, match="paging loop"):
        await h.client.list_interactions(SERVICE, SESSION)
    assert len(h.twilio.requests) == 2


async def test_paging_stops_at_the_page_cap(make: Callable[..., Harness]) -> None:
    h = make(client_options={"limits": AnswerLimits(max_pages=3)})  # not 1,000: quicker
    for n in range(5):
        h.twilio.on(
            FIRST if n == 0 else f"{INTERACTIONS}?p={n}", ok([], f"{INTERACTIONS}?p={n + 1}")
        )
    with pytest.raises(MalformedResponseError, match="more than 3 pages"):
        await h.client.list_interactions(SERVICE, SESSION)
    assert len(h.twilio.requests) == 3


async def test_non_string_next_page_url_is_malformed(h: Harness) -> None:
    h.twilio.on(FIRST, ok([], 42))  # type: ignore[arg-type]
    with pytest.raises(MalformedResponseError, match="non-string next_page_url"):
        await h.client.list_interactions(SERVICE, SESSION)


@pytest.mark.parametrize("bad", ["https://[::1", "https://proxy.twilio.com:https/x"])
async def test_next_page_url_that_is_not_a_url_is_malformed(h: Harness, bad: str) -> None:
    h.twilio.on(FIRST, ok([], bad))
    with pytest.raises(MalformedResponseError, match="not a URL"):
        await h.client.list_interactions(SERVICE, SESSION)
    assert len(h.twilio.requests) == 1


@pytest.mark.parametrize("base_url", ["ftp://proxy.twilio.com", "proxy.twilio.com", "https://"])
def test_base_url_must_be_http_or_https_with_a_host(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        ProxyClient(Settings(base_url=base_url))


async def test_list_sessions_reads_the_sessions_key(h: Harness) -> None:
    session = json.loads((FIXTURES / "session_fetch.json").read_text())
    h.twilio.on(f"{SESSIONS}?PageSize=50", ok([session], key="sessions"))
    [listed] = await h.client.list_sessions(SERVICE)
    assert (listed.sid, listed.status, listed.service_sid) == (SESSION, "open", SERVICE)
    assert listed.raw == session


@pytest.mark.parametrize(
    ("body", "kind", "problem"),
    [
        (
            {"meta": {"key": "other"}, "interactions": [interaction("KI1")], "other": []},
            "meta_key_mismatch",
            "names 'other' in meta.key, not 'interactions'",
        ),
        (
            {"meta": {}, "interactions": [interaction("KI1")]},
            "meta_key_mismatch",
            "names nothing in meta.key",
        ),
        (
            {"meta": {"key": ["interactions"]}, "interactions": []},
            "meta_key_mismatch",
            "names a list in meta.key",
        ),
        (
            {"meta": {"key": CANARY + " x"}, "interactions": []},
            "meta_key_mismatch",
            "names a str in meta.key",
        ),
        (
            {"meta": {"key": "interactions"}, "other": [interaction("KI1")]},
            "missing_list",
            "has no list under 'interactions'",
        ),
        (
            {"meta": {"key": "interactions"}, "interactions": None},
            "missing_list",
            "has no list under 'interactions'",
        ),
    ],
    ids=[
        "names-another",
        "no-key",
        "key-not-string",
        "key-not-identifier",
        "list-elsewhere",
        "null",
    ],
)
async def test_a_page_is_validated_against_its_own_meta_key(
    h: Harness, body: dict[str, Any], kind: str, problem: str
) -> None:
    h.twilio.on(FIRST, Reply(body=body))
    before = counter("poller_twilio_bad_responses", kind=kind)
    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(MalformedResponseError, match=problem) as caught,
    ):
        await h.client.list_interactions(SERVICE, SESSION)
    assert CANARY not in str(caught.value)
    assert counter("poller_twilio_bad_responses", kind=kind) == before + 1
    assert {"event": "twilio_bad_response", "kind": kind, "path": INTERACTIONS} in [
        {k: v for k, v in line.items() if k in ("event", "kind", "path")} for line in logs
    ]


async def test_a_sessions_page_naming_the_interactions_list_is_a_bad_answer(h: Harness) -> None:
    h.twilio.on(f"{SESSIONS}?PageSize=50", ok([], key="interactions"))
    with pytest.raises(MalformedResponseError, match="not 'sessions'"):
        await h.client.list_sessions(SERVICE)


async def test_sids_are_escaped_into_one_path_segment(h: Harness) -> None:
    h.twilio.on("/v1/Services/KS%2F..%3F/Sessions?PageSize=50", ok([], key="sessions"))
    assert await h.client.list_sessions("KS/..?") == []


# records


async def test_records_with_null_fields_and_unknown_enum_values_parse(h: Harness) -> None:
    raw: dict[str, Any] = {key: None for key in interaction("KI1")}
    raw.update(sid="KI1", type="carrier-pigeon", outbound_resource_status="teleported")
    h.twilio.on(FIRST, ok([raw]))
    [record] = await h.client.list_interactions(SERVICE, SESSION)
    assert record.type == "carrier-pigeon"
    assert record.outbound_resource_status == "teleported"
    assert (record.date_created, record.inbound_resource_status) == (None, None)
    assert record.raw == raw


async def test_records_without_sid_are_skipped_counted_and_logged_without_content(
    h: Harness,
) -> None:
    good = interaction("KI1", data=json.dumps({"body": CANARY}))
    bad = [interaction("", data=CANARY), {"data": CANARY}, interaction(None), "KI9"]
    h.twilio.on(FIRST, ok([*bad, good]))
    without_sid = counter("poller_twilio_bad_responses", kind="record_without_sid")
    not_object = counter("poller_twilio_bad_responses", kind="record_not_object")
    with structlog.testing.capture_logs() as logs:
        records = await h.client.list_interactions(SERVICE, SESSION)
    assert [r.sid for r in records] == ["KI1"]
    assert counter("poller_twilio_bad_responses", kind="record_without_sid") == without_sid + 3
    assert counter("poller_twilio_bad_responses", kind="record_not_object") == not_object + 1
    skipped = [entry for entry in logs if entry["event"] == "twilio_record_skipped"]
    assert [entry["index"] for entry in skipped] == [0, 1, 2, 3]
    assert CANARY not in repr(logs)


# request shape


async def test_requests_carry_basic_auth_user_agent_and_accept(h: Harness) -> None:
    h.twilio.on(FIRST, ok([]))
    await h.client.list_interactions(SERVICE, SESSION)
    headers = h.twilio.requests[0].headers
    expected = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert headers["Authorization"] == f"Basic {expected}"
    assert headers["User-Agent"] == f"twilio-proxy-poller/{__version__}"
    assert headers["Accept"] == "application/json"


async def test_each_request_carries_the_configured_timeout_and_a_host(h: Harness) -> None:
    h.twilio.on(FIRST, ok([]))
    await h.client.list_interactions(SERVICE, SESSION)
    request = h.twilio.requests[0]
    assert request.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 5.0)
    assert request.headers["Host"] == "proxy.twilio.com"


async def test_gzip_encoded_page_is_decoded(h: Harness) -> None:
    body = gzip.compress(json.dumps(page([interaction("KI1")])).encode())
    h.twilio.on(FIRST, Reply(content=body, headers={"Content-Encoding": "gzip"}))
    records = await h.client.list_interactions(SERVICE, SESSION)
    assert [r.sid for r in records] == ["KI1"]
    assert "gzip" in h.twilio.requests[0].headers["Accept-Encoding"]


async def test_default_transport_verifies_tls() -> None:
    async with ProxyClient(Settings(base_url="https://proxy.twilio.com")) as client:
        transport = client._transport
        assert isinstance(transport, WireTransport)
        assert transport.ssl_context is not None
        assert transport.ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert transport.ssl_context.check_hostname
        assert transport.ssl_context.cert_store_stats()["x509_ca"] > 0


async def test_an_http_base_url_gets_a_transport_without_tls() -> None:
    # An http:// base_url never speaks TLS: no context, no CA bundle loaded for it.
    async with ProxyClient(Settings(base_url="http://127.0.0.1:8080")) as client:
        transport = client._transport
        assert isinstance(transport, WireTransport)
        assert transport.ssl_context is None


# retries


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried_after_a_jittered_backoff(h: Harness, status: int) -> None:
    h.twilio.on(FIRST, Reply(status, {"code": 20500}), ok([interaction("KI1")]))
    before = counter("poller_twilio_requests", status=str(status))
    records = await h.client.list_interactions(SERVICE, SESSION)
    assert [r.sid for r in records] == ["KI1"]
    assert len(h.twilio.requests) == 2
    [wait] = h.time.slept
    assert 0.0 <= wait <= 0.5
    assert h.twilio.times[1] - h.twilio.times[0] == pytest.approx(wait)
    assert counter("poller_twilio_requests", status=str(status)) == before + 1


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout])
async def test_transport_errors_are_retried(h: Harness, error: type[Exception]) -> None:
    h.twilio.on(FIRST, Reply(raises=error), ok([interaction("KI1")]))
    before = counter("poller_twilio_requests", status="error")
    assert [r.sid for r in await h.client.list_interactions(SERVICE, SESSION)] == ["KI1"]
    assert len(h.twilio.requests) == 2
    assert counter("poller_twilio_requests", status="error") == before + 1


async def test_429_without_retry_after_backs_off_and_pauses_the_service(h: Harness) -> None:
    h.twilio.on(FIRST, Reply(429, {"code": 20429}), ok([]))
    limited = counter("poller_twilio_rate_limited")
    await h.client.list_interactions(SERVICE, SESSION)
    assert len(h.twilio.requests) == 2
    gap = h.twilio.times[1] - h.twilio.times[0]
    assert 0.0 < gap <= 0.5
    # White-box: ProxyClient has no public view of its limiters (nothing else needs one).
    limiters = h.client._limiters
    assert limiters.bucket(SERVICE).paused_until == pytest.approx(h.twilio.times[1])
    assert counter("poller_twilio_rate_limited") == limited + 1


async def test_429_with_numeric_retry_after_waits_exactly_that_long(h: Harness) -> None:
    h.twilio.on(FIRST, Reply(429, headers={"Retry-After": "7"}), ok([]))
    await h.client.list_interactions(SERVICE, SESSION)
    assert h.twilio.times[1] - h.twilio.times[0] == pytest.approx(7.0)


async def test_429_with_http_date_retry_after_counts_from_twilios_date_header(
    h: Harness,
) -> None:
    server_now = 1_700_000_000.0  # far from the client's wall clock: skew must not matter
    headers = {"Date": http_date(server_now), "Retry-After": http_date(server_now + 30)}
    h.twilio.on(FIRST, Reply(429, headers=headers), ok([]))
    await h.client.list_interactions(SERVICE, SESSION)
    assert h.twilio.times[1] - h.twilio.times[0] == pytest.approx(30.0)


async def test_http_date_retry_after_without_date_header_uses_the_wall_clock(
    h: Harness,
) -> None:
    headers = {"Retry-After": http_date(1_800_000_000.0 + 12)}
    h.twilio.on(FIRST, Reply(503, headers=headers), ok([]))
    await h.client.list_interactions(SERVICE, SESSION)
    assert h.twilio.times[1] - h.twilio.times[0] == pytest.approx(12.0)


async def test_retry_after_pauses_only_the_service_that_was_limited(h: Harness) -> None:
    h.twilio.on(FIRST, Reply(429, headers={"Retry-After": "20"}), ok([]))
    start = h.time.monotonic()
    await h.client.list_interactions(SERVICE, SESSION)
    limiters = h.client._limiters  # white-box, as above
    assert limiters.bucket(SERVICE).paused_until == pytest.approx(start + 20)
    assert limiters.bucket(OTHER_SERVICE).paused_until == float("-inf")


async def test_a_retry_resumes_at_the_page_that_failed(h: Harness) -> None:
    h.twilio.on(FIRST, ok([interaction("KI1")], f"{INTERACTIONS}?p=2"))
    h.twilio.on(
        f"{INTERACTIONS}?p=2",
        Reply(503),
        Reply(raises=httpx.ReadTimeout),
        ok([interaction("KI2")], f"{INTERACTIONS}?p=3"),
    )
    h.twilio.on(f"{INTERACTIONS}?p=3", ok([interaction("KI3")]))
    records = await h.client.list_interactions(SERVICE, SESSION)
    assert [r.sid for r in records] == ["KI1", "KI2", "KI3"]
    p2 = f"{INTERACTIONS}?p=2"
    assert h.twilio.paths == [FIRST, p2, p2, p2, f"{INTERACTIONS}?p=3"]


@pytest.mark.parametrize(
    ("reply", "error", "status"),
    [
        (Reply(503), TransientSourceError, 503),
        (Reply(429), RateLimitedError, 429),
        (Reply(raises=httpx.ConnectError), TransientSourceError, None),
    ],
    ids=["503", "429", "connect-error"],
)
async def test_retries_stop_at_the_deadline_with_the_matching_error(
    make: Callable[..., Harness], reply: Reply, error: type[SourceError], status: int | None
) -> None:
    h = make(retry_deadline_seconds=10.0)
    h.twilio.on(FIRST, reply)
    start = h.time.monotonic()
    with pytest.raises(error, match="retry_deadline_seconds") as caught:
        await h.client.list_interactions(SERVICE, SESSION)
    assert type(caught.value) is error
    assert caught.value.status == status
    assert INTERACTIONS in str(caught.value)
    assert len(h.twilio.requests) >= 4
    assert all(at <= start + 10.0 for at in h.twilio.times)
    if status is None:
        assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_retry_after_beyond_the_deadline_gives_up_without_waiting(
    make: Callable[..., Harness],
) -> None:
    h = make(retry_deadline_seconds=60.0)
    h.twilio.on(FIRST, Reply(429, headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimitedError, match="HTTP 429"):
        await h.client.list_interactions(SERVICE, SESSION)
    assert len(h.twilio.requests) == 1
    assert h.time.slept == []


# errors that are not retried


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_credentials_raise_credentials_error_without_retry(
    h: Harness, status: int
) -> None:
    body = {
        "code": 20003,
        "message": CANARY,
        "more_info": "https://www.twilio.com/docs/errors/20003",
    }
    h.twilio.on(FIRST, Reply(status, {**body, "status": status}))
    with pytest.raises(CredentialsError) as caught:
        await h.client.list_interactions(SERVICE, SESSION)
    message = str(caught.value)
    assert f"Twilio rejected the credentials (HTTP {status}, code 20003)" in message
    assert "proxy.twilio.com" in message
    assert CANARY not in message
    assert TOKEN not in message
    assert len(h.twilio.requests) == 1


async def test_404_on_interactions_names_the_session_and_its_service(h: Harness) -> None:
    h.twilio.on(FIRST, Reply(404, {"code": 20404, "message": CANARY, "status": 404}))
    with pytest.raises(NotFoundError) as caught:
        await h.client.list_interactions(SERVICE, SESSION)
    assert f"Session {SESSION} in Service {SERVICE}" in str(caught.value)
    assert "code 20404" in str(caught.value)
    assert CANARY not in str(caught.value)


async def test_404_on_sessions_names_the_service(h: Harness) -> None:
    h.twilio.on(f"{SESSIONS}?PageSize=50", Reply(404, content=b"<html>gone</html>"))
    with pytest.raises(NotFoundError) as caught:
        await h.client.list_sessions(SERVICE)
    assert str(caught.value) == f"Twilio has no Proxy Service {SERVICE} (HTTP 404)"
    assert caught.value.status == 404


@pytest.mark.parametrize("status", [400, 405, 422, 301, 501])
async def test_other_statuses_raise_source_error_without_retry(h: Harness, status: int) -> None:
    h.twilio.on(FIRST, Reply(status, {"code": 20001, "message": CANARY}))
    with pytest.raises(SourceError) as caught:
        await h.client.list_interactions(SERVICE, SESSION)
    assert type(caught.value) is SourceError
    assert caught.value.status == status
    assert INTERACTIONS in str(caught.value)
    assert CANARY not in str(caught.value)
    assert len(h.twilio.requests) == 1


@pytest.mark.parametrize(
    ("content", "kind", "problem"),
    [
        (b'{"interactions": [' + CANARY.encode(), "bad_json", "is not valid JSON"),
        (b"\xff\xfe" + CANARY.encode(), "bad_json", "is not valid JSON"),
        (json.dumps([CANARY]).encode(), "bad_json", "is not a JSON object"),
        (
            json.dumps({"meta": {"key": "interactions"}, "x": CANARY}).encode(),
            "missing_list",
            "no list under",
        ),
        (json.dumps({"interactions": [CANARY]}).encode(), "missing_key", "no 'meta' object"),
        (json.dumps({"interactions": [], "meta": CANARY}).encode(), "missing_key", "no 'meta'"),
        (
            json.dumps({"interactions": {"x": CANARY}, "meta": {"key": "interactions"}}).encode(),
            "missing_list",
            "no list under 'interactions'",
        ),
    ],
    ids=["truncated", "not-utf8", "array", "no-list", "no-meta", "meta-string", "dict-not-list"],
)
async def test_malformed_pages_name_the_path_but_never_the_body(
    h: Harness, content: bytes, kind: str, problem: str
) -> None:
    h.twilio.on(FIRST, Reply(content=content))
    before = counter("poller_twilio_bad_responses", kind=kind)
    with pytest.raises(MalformedResponseError, match=problem) as caught:
        await h.client.list_interactions(SERVICE, SESSION)
    assert INTERACTIONS in str(caught.value)
    assert CANARY not in str(caught.value)
    assert counter("poller_twilio_bad_responses", kind=kind) == before + 1


# rate and concurrency


async def test_rate_limiter_spaces_requests_of_one_service(make: Callable[..., Harness]) -> None:
    h = make(max_requests_per_second=2.0)
    for n in range(6):
        nxt = f"{INTERACTIONS}?p={n + 1}" if n < 5 else None
        h.twilio.on(FIRST if n == 0 else f"{INTERACTIONS}?p={n}", ok([], nxt))
    start = h.time.monotonic()
    await h.client.list_interactions(SERVICE, SESSION)
    offsets = [at - start for at in h.twilio.times]
    assert offsets == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])


async def test_services_do_not_share_a_rate_limit(make: Callable[..., Harness]) -> None:
    h = make(max_requests_per_second=1.0)
    for service in (SERVICE, OTHER_SERVICE):
        h.twilio.on(f"/v1/Services/{service}/Sessions?PageSize=50", ok([], key="sessions"))
    start = h.time.monotonic()
    await h.client.list_sessions(SERVICE)
    await h.client.list_sessions(OTHER_SERVICE)
    assert h.twilio.times == [start, start]


async def test_concurrency_limit_bounds_requests_in_flight() -> None:
    in_flight = 0
    peak = 0
    full = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            full.set()
        await asyncio.wait_for(full.wait(), timeout=5)
        in_flight -= 1
        return httpx.Response(200, json=page([]))

    client = ProxyClient(Settings(max_concurrency=2), transport=httpx.MockTransport(handler))
    async with client:
        sessions = [f"KC{n:032d}" for n in range(6)]
        await asyncio.gather(*(client.list_interactions(SERVICE, s) for s in sessions))
    assert peak == 2


# the default transport, over real loopback HTTP


async def test_default_transport_talks_to_a_real_server_on_loopback() -> None:
    seen: list[str] = []

    async def pages(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        if request.query.get("p") == "2":
            return web.json_response(page([interaction("KI2")]))
        return web.json_response(page([interaction("KI1")], f"{INTERACTIONS}?p=2"))

    app = web.Application()
    app.router.add_get(INTERACTIONS, pages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ProxyClient(Settings(base_url=f"http://127.0.0.1:{port}")) as client:
            records = await client.list_interactions(SERVICE, SESSION)
    finally:
        await runner.cleanup()
    assert [r.sid for r in records] == ["KI1", "KI2"]
    expected = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert seen == [f"Basic {expected}"] * 2


async def test_a_server_that_never_answers_times_out_as_a_transient_error() -> None:
    answered = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await answered.wait()
        return web.json_response(page([]))

    app = web.Application()
    app.router.add_get(INTERACTIONS, hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = Settings(
        base_url=f"http://127.0.0.1:{port}", timeout_seconds=0.2, retry_deadline_seconds=0.0
    )
    try:
        async with ProxyClient(settings) as client:
            with pytest.raises(TransientSourceError):
                await client.list_interactions(SERVICE, SESSION)
    finally:
        answered.set()
        await runner.cleanup()
