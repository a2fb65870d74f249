"""The status snapshot and page on the memory backend: content, escaping, no secret, HTTP, auth."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from poller.config import Config, parse_config
from poller.errors import StateUnavailableError
from poller.events import Event, EventType, event_id
from poller.observe import metrics
from poller.observe.cycles import CycleLog
from poller.observe.health import HealthServer, HealthState
from poller.observe.listener import start_http
from poller.observe.status import StatusSource
from poller.observe.status_page import render_page
from poller.state.history import Attempt
from poller.state.memory.store import MemoryStore
from poller.twilio.records import Fingerprint

SERVICE = "KS" + "1" * 32
SESSION = "KC" + "2" * 32
TOKEN = "tok-TWILIO-SECRET-4711"
WEBHOOK_SECRET = "whsec_U0VDUkVULVdFQkhPT0stU0lHTklORy1LRVk="
HOOK_URL = "http://127.0.0.1:9/hooks/PATH-SECRET-0815"
SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/SLACKSECRET42"
BODY = "MESSAGE-BODY-do-not-show"
HOSTILE = "<script>alert('x')</script>"
PASSWORD = "PAGE-PASSWORD-9876"
NOW = 1_800_000_000.0


def make_config(**http: Any) -> Config:
    return parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": TOKEN},
            "watch": [{"service_sid": SERVICE, "all_sessions": True}],
            "sinks": [
                {"name": "ops", "type": "webhook", "url": HOOK_URL, "secret": WEBHOOK_SECRET},
                {"name": "chat", "type": "slack", "webhook_url": SLACK_URL},
            ],
            **({"http": http} if http else {}),
        },
        {},
    )


def make_event(n: int) -> Event:
    sid = f"KI{n:032d}"
    fp = Fingerprint(f"2026-11-27T10:{n:02d}:00Z", "received", "sent")
    return Event(
        id=event_id(EventType.CREATED, sid, None, fp),
        type=EventType.CREATED,
        service_sid=SERVICE,
        session_sid=SESSION,
        interaction_sid=sid,
        interaction={"sid": sid, "data": json.dumps({"body": BODY + HOSTILE})},
        timestamp=fp.date_updated or "",
        sort_key=f"{fp.date_updated}|{sid}",
    )


async def seeded_store() -> MemoryStore:
    """Two events for both sinks: ops delivered one and dead-lettered one; chat is disabled."""
    store = MemoryStore()
    await store.begin_watch(SERVICE, [SESSION], NOW - 600)
    events = [make_event(1), make_event(2)]
    await store.commit_poll(
        SERVICE,
        SESSION,
        fetched={e.interaction_sid: Fingerprint(None, None, None) for e in events},
        events=[(e, ["ops", "chat"]) for e in events],
        now=NOW - 100,
    )
    first, second = await store.backlog("ops", None, 10)
    await store.ack([first.id], history=[Attempt(first.id, NOW - 90, 0.042, "delivered", 204)])
    refused = Attempt(second.id, NOW - 80, 0.5, "dead", 400, f"HTTP 400 {HOSTILE}")
    await store.dead_letter(second.id, error="HTTP 400", status=400, now=NOW - 80, attempt=refused)
    await store.record_sink_disabled("chat", status=404, reason=f"gone {HOSTILE}", now=NOW - 70)
    return store


def source_of(store: MemoryStore, config: Config, cycles: CycleLog | None = None) -> StatusSource:
    if cycles is None:
        cycles = CycleLog(clock=lambda: NOW - 5)
        cycles.record(SERVICE, polled=1, failed=0, succeeded=True)
    return StatusSource(store, lambda: config, cycles, clock=lambda: NOW)


async def test_snapshot_counts_each_sinks_outbox_dead_letters_and_attempts() -> None:
    store = await seeded_store()
    data: Any = (await source_of(store, make_config()).snapshot()).to_json()
    ops, chat = data["sinks"]
    assert (ops["name"], ops["type"]) == ("ops", "webhook")
    assert (ops["pending"], ops["dead_letters"]) == (0, 1)
    assert [a["outcome"] for a in ops["recent_attempts"]] == ["dead", "delivered"]
    assert ops["recent_attempts"][1]["latency_seconds"] == 0.042
    assert (chat["pending"], chat["oldest_pending_age_seconds"]) == (2, 100.0)
    assert chat["disabled"]["status"] == 404
    [service] = data["services"]
    assert service["sessions"] == 1
    assert service["last_cycle"]["polled"] == 1
    assert data["leases"] is None and data["replica"] is None


async def test_a_service_without_a_cycle_yet_is_shown_waiting() -> None:
    store = await seeded_store()
    snapshot = await source_of(store, make_config(), CycleLog()).snapshot()
    assert snapshot.services[0].cycle is None
    assert "waiting" in render_page(snapshot)


async def test_page_shows_pending_and_dead_letters_per_sink() -> None:
    page = render_page(await source_of(await seeded_store(), make_config()).snapshot())
    assert '<tr data-sink="ops" class="failed">' in page
    assert '<td data-field="dead" class="bad">1</td>' in page
    assert '<td data-field="pending">2</td>' in page
    assert '<meta name="viewport"' in page
    assert "1m 40s" in page  # chat's oldest pending age


async def test_a_sink_whose_deliveries_wait_for_a_retry_is_shown_retrying() -> None:
    store = MemoryStore()
    await store.begin_watch(SERVICE, [SESSION], NOW - 600)
    event = make_event(3)
    await store.commit_poll(
        SERVICE,
        SESSION,
        fetched={event.interaction_sid: Fingerprint(None, None, None)},
        events=[(event, ["ops"])],
        now=NOW - 50,
    )
    [row] = await store.backlog("ops", None, 10)
    failed = Attempt(row.id, NOW - 40, 5.0, "retry", None, "ReadTimeout")
    await store.retry_later(
        row.id, next_attempt_at=NOW + 60, error="ReadTimeout", status=None, attempt=failed
    )
    snapshot = await source_of(store, make_config()).snapshot()
    data: Any = snapshot.to_json()
    retrying = data["sinks"][0]["retrying"]
    assert (retrying["deliveries"], retrying["attempts"]) == (1, 1)
    page = render_page(snapshot)
    assert '<td data-field="state">retrying</td>' in page
    assert "1 failed, 1 attempts, last: ReadTimeout" in page


async def test_text_from_outside_is_escaped_on_the_page() -> None:
    page = render_page(await source_of(await seeded_store(), make_config()).snapshot())
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


async def test_no_secret_body_or_url_on_the_page_or_in_the_json() -> None:
    source = source_of(await seeded_store(), make_config(listen="127.0.0.1:0"))
    snapshot = await source.snapshot()
    shown = render_page(snapshot) + json.dumps(snapshot.to_json())
    for secret in (TOKEN, WEBHOOK_SECRET, "PATH-SECRET", "SLACKSECRET", "T0SECRET", BODY):
        assert secret not in shown


@pytest.fixture
async def guarded() -> AsyncIterator[httpx.AsyncClient]:
    """A health server with the status page behind basic auth (``admin`` / ``PASSWORD``)."""
    config = make_config(listen="127.0.0.1:0", auth={"username": "admin", "password": PASSWORD})
    assert config.http is not None
    server = HealthServer(
        "127.0.0.1",
        0,
        health=HealthState(),
        status=source_of(await seeded_store(), config),
        auth=config.http.auth,
    )
    async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        yield client


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def refused(reason: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("poller_http_auth_refused_total", {"reason": reason})
        or 0.0
    )


@pytest.mark.parametrize("path", ["/", "/api/status", "/static/status.css", "/static/status.js"])
async def test_auth_guards_the_page_its_json_and_assets(
    guarded: httpx.AsyncClient, path: str
) -> None:
    before = refused("missing")
    answer = await guarded.get(path)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="poller"'
    assert refused("missing") == before + 1
    assert (await guarded.get(path, headers=basic("admin", PASSWORD))).status_code == 200


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (basic("admin", "guess"), "wrong"),
        (basic("root", PASSWORD), "wrong"),
        ({"Authorization": "Bearer abc"}, "malformed"),
        ({"Authorization": "Basic !!!"}, "malformed"),
        ({"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()}, "malformed"),
    ],
)
async def test_a_refusal_is_logged_and_counted_without_the_password(
    guarded: httpx.AsyncClient, headers: dict[str, str], reason: str
) -> None:
    before = refused(reason)
    with capture_logs() as logs:
        answer = await guarded.get("/api/status", headers=headers)
    assert answer.status_code == 401
    assert refused(reason) == before + 1
    [event] = [e for e in logs if e["event"] == "status_auth_refused"]
    assert event["reason"] == reason
    assert "guess" not in repr(logs) and PASSWORD not in repr(logs)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_stay_open_under_auth(
    guarded: httpx.AsyncClient, path: str
) -> None:
    assert (await guarded.get(path)).status_code in (200, 503)  # never 401


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_the_page_is_read_only(guarded: httpx.AsyncClient, method: str) -> None:
    auth = basic("admin", PASSWORD)
    for path in ("/", "/api/status"):
        assert (await guarded.request(method, path, headers=auth)).status_code == 405


async def test_json_and_page_served_with_their_types(guarded: httpx.AsyncClient) -> None:
    auth = basic("admin", PASSWORD)
    api = await guarded.get("/api/status", headers=auth)
    assert api.headers["Content-Type"].startswith("application/json")
    assert [s["name"] for s in api.json()["sinks"]] == ["ops", "chat"]
    page = await guarded.get("/", headers=auth)
    assert page.headers["Content-Type"].startswith("text/html")
    assert "/static/status.js" in page.text
    script = await guarded.get("/static/status.js", headers=auth)
    assert "replaceWith" in script.text
    assert (await guarded.get("/static/other.js", headers=auth)).status_code == 404


async def test_without_auth_the_page_is_open() -> None:
    server = HealthServer(
        "127.0.0.1", 0, health=HealthState(), status=source_of(MemoryStore(), make_config())
    )
    async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        assert (await client.get("/")).status_code == 200


@pytest.mark.parametrize(
    ("listen", "auth", "warned"),
    [
        ("0.0.0.0:0", None, True),
        ("0.0.0.0:0", {"username": "admin", "password": PASSWORD}, False),
        ("127.0.0.1:0", None, False),
    ],
)
async def test_an_unprotected_page_off_loopback_is_warned_of(
    listen: str, auth: dict[str, str] | None, warned: bool
) -> None:
    config = make_config(listen=listen, **({"auth": auth} if auth else {}))
    with capture_logs() as logs:
        server = await start_http(config, HealthState(), source_of(MemoryStore(), config))
    assert server is not None
    await server.stop()
    assert any(e["event"] == "status_page_unprotected" for e in logs) is warned


class _AwayStore(MemoryStore):
    async def counts_by_sink(self, state: Any) -> dict[str, int]:
        raise StateUnavailableError("state postgresql://db/poller: connection refused")


@pytest.mark.parametrize("path", ["/", "/api/status"])
async def test_a_state_that_cannot_be_read_is_a_one_line_503(path: str) -> None:
    source = source_of(_AwayStore(), make_config())
    server = HealthServer("127.0.0.1", 0, health=HealthState(), status=source)
    with capture_logs() as logs:
        async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            answer = await c.get(path)
    assert answer.status_code == 503
    assert answer.text == (
        "the state cannot be read now: state postgresql://db/poller: connection refused\n"
    )
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["status_unavailable"]
