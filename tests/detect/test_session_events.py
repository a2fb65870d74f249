"""Session events, unit by unit: the pure diff, ids, routing, payloads, the poll that makes them,
the Session fetch of a watch without the Sessions list, and what each sink says of them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from poller.config import PollConfig, WebhookSinkConfig
from poller.detect.routing import accepts, route
from poller.detect.session_diff import needs_fetch, session_events
from poller.errors import MalformedResponseError, NotFoundError
from poller.events import INTERACTION_EVENT_TYPES, SESSION_EVENT_TYPES, Event, EventType
from poller.sinks.discord import event_embed
from poller.sinks.email_message import DEFAULT_SUBJECT, build_message, compile_subject
from poller.sinks.render import summarize
from poller.sinks.samples import sample_events
from poller.sinks.slack_blocks import event_message
from poller.sinks.slack_template import template_variables
from poller.sinks.teams import escape as teams_escape
from poller.sinks.teams import event_card
from poller.state.models import StoredSession
from poller.state.sqlite import schema
from poller.state.sqlite.store import SqliteStore
from poller.twilio.client import ProxyClient
from poller.twilio.records import Interaction, Session
from poller.watch.poll import SessionPoller

FIXTURES = Path(__file__).parents[1] / "fixtures"
RAW: dict[str, Any] = json.loads((FIXTURES / "session_fetch.json").read_text())
SERVICE = RAW["service_sid"]
SID = RAW["sid"]
NOW = 1_900_000_000.0


def session(**fields: Any) -> Session:
    record = Session.from_api({**RAW, **fields})
    assert record is not None
    return record


OPEN = session(status="open", closed_reason=None, date_ended=None)


def updated(old: Session, new: Session) -> Event:
    (event,) = session_events(
        SERVICE, old.fingerprint, new, created=False, detected_at="2026-01-01T00:00:00Z"
    )
    return event


# the pure diff


def test_first_sight_of_a_session_that_existed_at_the_watch_start_is_no_event() -> None:
    assert session_events(SERVICE, None, OPEN, created=False, detected_at="x") == []


def test_first_sight_of_a_session_created_since_the_watch_began_is_session_created() -> None:
    (event,) = session_events(SERVICE, None, OPEN, created=True, detected_at="x")
    assert event.type is EventType.SESSION_CREATED
    assert (event.changes, event.session, event.timestamp) == (None, OPEN.raw, RAW["date_created"])


@pytest.mark.parametrize(
    ("field_name", "new_value"),
    [
        ("status", "closed"),
        ("closed_reason", "customer hung up"),
        ("date_expiry", "2015-07-31T20:00:00Z"),
        ("date_ended", "2015-07-30T21:00:00Z"),
    ],
)
def test_each_fingerprint_field_that_changes_is_one_session_updated(
    field_name: str, new_value: str
) -> None:
    event = updated(OPEN, session(**{**OPEN.raw, field_name: new_value}))
    assert event.type is EventType.SESSION_UPDATED
    assert event.changes == {field_name: (OPEN.raw[field_name], new_value)}


def test_a_close_is_one_event_with_every_changed_field() -> None:
    closed = session(status="closed", closed_reason="", date_ended="2015-07-30T21:00:00Z")
    event = updated(OPEN, closed)
    assert event.changes == {
        "status": ("open", "closed"),
        "closed_reason": (None, ""),
        "date_ended": (None, "2015-07-30T21:00:00Z"),
    }


def test_fields_outside_the_fingerprint_change_nothing() -> None:
    moved = session(**{**OPEN.raw, "date_updated": "2016-01-01T00:00:00Z", "ttl": 60})
    assert session_events(SERVICE, OPEN.fingerprint, moved, created=False, detected_at="x") == []


def test_ids_are_stable_and_distinct_per_change() -> None:
    closed = session(status="closed", closed_reason="", date_ended="2015-07-30T21:00:00Z")
    assert updated(OPEN, closed).id == updated(OPEN, closed).id
    expired = session(**{**OPEN.raw, "date_expiry": "2016-01-01T00:00:00Z"})
    reopened = session(**{**closed.raw, "status": "in-progress"})
    ids = {
        updated(OPEN, closed).id,
        updated(OPEN, expired).id,
        updated(reopened, closed).id,
        session_events(SERVICE, None, OPEN, created=True, detected_at="x")[0].id,
    }
    assert len(ids) == 4


def test_a_session_is_fetched_on_first_sight_activity_final_and_when_stale() -> None:
    fresh = StoredSession(OPEN.fingerprint, checked_at=NOW - 10)
    stale = StoredSession(OPEN.fingerprint, checked_at=NOW - 4000)

    def fetch(stored: StoredSession | None, activity: bool = False, final: bool = False) -> bool:
        return needs_fetch(stored, activity=activity, final=final, now=NOW, refresh_seconds=3600)

    assert fetch(None) and fetch(fresh, activity=True) and fetch(fresh, final=True)
    assert fetch(stale)
    assert not fetch(fresh)


# events, routing, payload


@dataclass(frozen=True)
class Sink:
    name: str
    events: tuple[str, ...] = INTERACTION_EVENT_TYPES
    filter: Any = None
    include_data: bool = True


@dataclass(frozen=True)
class Filter:
    type: tuple[str, ...] | None = None
    inbound_resource_status: tuple[str, ...] | None = None
    outbound_resource_status: tuple[str, ...] | None = None
    service_sid: tuple[str, ...] | None = None
    session_sid: tuple[str, ...] | None = None


def test_a_sink_with_only_interaction_events_gets_no_session_event() -> None:
    closed = updated(OPEN, session(status="closed"))
    sinks = [
        Sink("default"),
        Sink("lifecycle", SESSION_EVENT_TYPES),
        Sink("one", ("session.created",)),
    ]
    assert route(sinks, closed) == ["lifecycle"]


def test_a_filter_applies_its_service_and_session_keys_to_session_events() -> None:
    closed = updated(OPEN, session(status="closed"))
    messages_only = Sink("m", SESSION_EVENT_TYPES, Filter(type=("message",)))
    elsewhere = Sink("e", SESSION_EVENT_TYPES, Filter(session_sid=("KC" + "f" * 32,)))
    assert accepts(messages_only, closed)
    assert not accepts(elsewhere, closed)


def test_the_webhook_payload_has_the_whole_session_and_its_changes() -> None:
    closed = session(status="closed", closed_reason="", date_ended="2015-07-30T21:00:00Z")
    event = updated(OPEN, closed)
    body = event.payload(include_data=False)
    assert body["type"] == "session.updated"
    assert body["data"] == {
        "service_sid": SERVICE,
        "session_sid": SID,
        "session": closed.raw,
        "changes": {
            "status": ["open", "closed"],
            "closed_reason": [None, ""],
            "date_ended": [None, "2015-07-30T21:00:00Z"],
        },
    }
    assert Event.from_json(event.to_json()) == event


# the poll


@dataclass
class FakeTwilio:
    """Interactions and Sessions of one Service, counting every Session fetch."""

    interactions: list[Interaction] = field(default_factory=list)
    record: Session = OPEN
    fetches: int = 0

    async def list_interactions(self, service_sid: str, session_sid: str) -> list[Interaction]:
        return list(self.interactions)

    async def fetch_session(self, service_sid: str, session_sid: str) -> Session:
        self.fetches += 1
        return self.record

    def add(self, n: int) -> None:
        raw = {
            "sid": f"KI{n:032d}",
            "session_sid": SID,
            "service_sid": SERVICE,
            "type": "message",
            "date_created": f"2015-07-30T20:00:{n:02d}Z",
            "date_updated": f"2015-07-30T20:00:{n:02d}Z",
            "outbound_resource_status": "delivered",
        }
        interaction = Interaction.from_api(raw)
        assert interaction is not None
        self.interactions.append(interaction)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore.open(tmp_path / "state.db") as opened:
        yield opened


def poller_of(store: SqliteStore, twilio: FakeTwilio, *, fetch: bool = True) -> SessionPoller:
    # The records are years older than the clock: none is left to settle.
    settings = PollConfig(first_run="baseline", timeout_seconds=5.0)
    sinks = [Sink("all", INTERACTION_EVENT_TYPES + SESSION_EVENT_TYPES), Sink("plain")]
    source = twilio if fetch else None
    return SessionPoller(twilio, store, settings, sinks, clock=lambda: NOW, session_source=source)


async def queued(store: SqliteStore, sink: str) -> list[str]:
    return [d.event.type.value for d in await store.backlog(sink, None, 100)]


async def test_a_new_session_is_created_before_its_interactions_and_closed_after(
    store: SqliteStore,
) -> None:
    twilio = FakeTwilio()
    poller = poller_of(store, twilio)
    twilio.add(1)
    await poller.poll(SERVICE, SID, new_traffic=True, session=OPEN)
    twilio.add(2)
    closed = session(status="closed", closed_reason="", date_ended="2015-07-30T21:00:00Z")
    outcome = await poller.poll(SERVICE, SID, session=closed, status="closed", final=True)
    assert outcome.events == 2
    assert await queued(store, "all") == [
        "session.created",
        "interaction.created",
        "interaction.created",
        "session.updated",
    ]
    assert await queued(store, "plain") == ["interaction.created", "interaction.created"]
    assert twilio.fetches == 0  # the listing gave the records


async def test_a_baselined_session_stores_its_fingerprint_and_a_close_alone_is_one_event(
    store: SqliteStore,
) -> None:
    twilio = FakeTwilio()
    twilio.add(1)
    poller = poller_of(store, twilio)
    await poller.poll(SERVICE, SID, session=OPEN)
    assert await store.session_fingerprint(SID) == StoredSession(OPEN.fingerprint, NOW)
    await poller.poll(SERVICE, SID, session=OPEN)
    assert await queued(store, "all") == []
    await poller.poll(SERVICE, SID, session=session(status="closed"))
    assert await queued(store, "all") == ["session.updated"]


async def test_an_unlisted_session_is_fetched_only_when_its_poll_finds_activity(
    store: SqliteStore,
) -> None:
    twilio = FakeTwilio()
    twilio.add(1)
    poller = poller_of(store, twilio)
    await poller.poll(SERVICE, SID)  # first sight: fetched for its fingerprint
    await poller.poll(SERVICE, SID)  # nothing moved: no fetch
    assert twilio.fetches == 1
    twilio.add(2)
    twilio.record = session(status="closed", closed_reason="", date_ended="2015-07-30T21:00:00Z")
    await poller.poll(SERVICE, SID)
    assert twilio.fetches == 2
    assert await queued(store, "all") == ["interaction.created", "session.updated"]
    state = {s.session_sid: s for s in await store.sessions()}.get(SID)
    assert state is not None and state.gone_at is not None  # the fetch told it is closed


async def test_without_a_session_source_an_unlisted_poll_makes_no_session_event(
    store: SqliteStore,
) -> None:
    twilio = FakeTwilio()
    poller = poller_of(store, twilio, fetch=False)
    twilio.add(1)
    await poller.poll(SERVICE, SID, new_traffic=True)
    assert await queued(store, "all") == ["interaction.created"]
    assert await store.session_fingerprint(SID) is None


# the Session fetch


@dataclass(frozen=True)
class Settings:
    base_url: str = "https://proxy.twilio.com"
    page_size: int = 50
    max_requests_per_second: float = 1000.0
    max_concurrency: int = 2
    timeout_seconds: float = 5.0
    retry_deadline_seconds: float = 5.0

    @property
    def credentials(self) -> tuple[str, str]:
        return "AC" + "0" * 32, "token"


def client_answering(*replies: httpx.Response, seen: list[httpx.Request]) -> ProxyClient:
    answers = list(replies)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    async def no_wait(seconds: float) -> None:
        return None

    return ProxyClient(Settings(), transport=httpx.MockTransport(handler), sleep=no_wait)


async def test_fetch_session_gets_one_session_and_retries_a_503() -> None:
    seen: list[httpx.Request] = []
    client = client_answering(httpx.Response(503), httpx.Response(200, json=RAW), seen=seen)
    record = await client.fetch_session(SERVICE, SID)
    assert (record.sid, record.raw) == (SID, RAW)
    assert [r.url.path for r in seen] == [f"/v1/Services/{SERVICE}/Sessions/{SID}"] * 2
    assert seen[0].headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize(
    "body", [[RAW], {**RAW, "sid": "KC" + "b" * 32}, {"meta": {}, "sessions": []}]
)
async def test_fetch_session_refuses_an_answer_that_is_not_that_session(body: Any) -> None:
    client = client_answering(httpx.Response(200, json=body), seen=[])
    with pytest.raises(MalformedResponseError, match="GET /v1/Services/"):
        await client.fetch_session(SERVICE, SID)


async def test_fetch_session_of_a_deleted_session_is_not_found() -> None:
    answer = httpx.Response(404, json={"code": 20404, "message": "not found", "status": 404})
    client = client_answering(answer, seen=[])
    with pytest.raises(NotFoundError):
        await client.fetch_session(SERVICE, SID)


# what sinks say


def _closed_event() -> Event:
    (event,) = sample_events(["session.updated"])
    return event


def _texts(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def test_slack_says_session_closed_with_its_changes_and_no_interaction() -> None:
    message = event_message(_closed_event(), include_data=True)
    text = "\n".join(_texts(message))
    assert message["blocks"][0]["text"]["text"] == "Session closed"
    assert "in-progress → closed" in text and "Interaction" not in text
    assert message["text"].startswith("Session closed: KC")


def test_slack_templates_see_the_session() -> None:
    variables = template_variables(_closed_event(), include_data=True)
    assert variables["session"]["status"] == "closed"
    assert variables["title"] == "Session closed"


def test_teams_discord_and_email_render_the_session_and_its_changes() -> None:
    created, closed = sample_events(["session.created", "session.updated"])
    summary = summarize(closed, include_data=True)
    assert summary.title == "Session closed"
    assert ("Status", "in-progress → closed") in summary.facts
    assert ("Unique name", "Order #1234") in summary.facts
    assert summarize(created, include_data=True).title == "New session"
    card_text = "\n".join(_texts(event_card(summary)))
    embed = event_embed(summary)
    assert "Session closed" in card_text
    assert teams_escape("in-progress → closed") in card_text
    assert embed["title"] == "Session closed"
    assert any(f["name"] == "Status" and "closed" in f["value"] for f in embed["fields"])
    mail, _ = build_message(
        [closed],
        subject=compile_subject(DEFAULT_SUBJECT),
        sender="poller@example.com",
        recipients=["ops@example.com"],
        include_data=True,
    )
    text = mail.get_body(("plain",))
    assert "Session closed" in str(mail["Subject"])
    assert text is not None and "in-progress → closed" in text.get_content()


def test_the_documented_session_updated_is_the_sample_with_its_id() -> None:
    text = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    section = text.split("## Session events", 1)[1].split("## Event ids", 1)[0]
    documented = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    event = _closed_event()
    assert documented == event.payload()
    assert f"`{event.id}`" in section


def test_events_accepts_the_session_types_and_the_default_leaves_them_out() -> None:
    base = {"name": "ops", "type": "webhook", "url": "https://example.com/hook"}
    assert WebhookSinkConfig.model_validate(base).events == INTERACTION_EVENT_TYPES
    chosen = WebhookSinkConfig.model_validate({**base, "events": ["session.updated"]})
    assert chosen.events == ("session.updated",)
    with pytest.raises(ValueError, match=r"session\.created or session\.updated"):
        WebhookSinkConfig.model_validate({**base, "events": ["session.closed"]})


async def test_a_state_file_from_before_session_events_baselines_its_sessions_quietly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    schema.migrate(conn, schema.MIGRATIONS[:1])
    conn.execute(
        "INSERT INTO sessions (service_sid, session_sid, baselined, new_traffic, added_at) "
        "VALUES (?, ?, 1, 1, 0)",
        (SERVICE, SID),
    )
    conn.commit()
    conn.close()
    twilio = FakeTwilio()
    async with SqliteStore.open(path) as store:
        assert (await store.summary()).schema_version == schema.latest_version()
        await poller_of(store, twilio).poll(SERVICE, SID, new_traffic=True, session=OPEN)
        assert await queued(store, "all") == []
        assert await store.session_fingerprint(SID) == StoredSession(OPEN.fingerprint, NOW)


async def test_a_failed_session_fetch_costs_only_the_session_events(store: SqliteStore) -> None:
    class Failing(FakeTwilio):
        async def fetch_session(self, service_sid: str, session_sid: str) -> Session:
            self.fetches += 1
            raise NotFoundError("Twilio answered 404 to GET /v1/Services/KS/Sessions/KC")

    twilio = Failing()
    twilio.add(1)
    poller = poller_of(store, twilio)
    with capture_logs() as logs:
        outcome = await poller.poll(SERVICE, SID, new_traffic=True)
    assert (outcome.ok, outcome.events) == (True, 1)
    assert await queued(store, "all") == ["interaction.created"]
    assert await store.session_fingerprint(SID) is None
    assert [e["error_type"] for e in logs if e["event"] == "session_fetch_failed"] == [
        "NotFoundError"
    ]
    await poller.poll(SERVICE, SID)
    assert twilio.fetches == 2  # nothing stored: the next poll tries again


# a session's first sight long after its watch began (a background baseline)

CLOSED = session(status="closed", closed_reason="", date_ended="2015-07-30T21:00:00Z")


async def begin_watch(store: SqliteStore, last_interaction: str) -> None:
    await store.begin_watch(
        SERVICE,
        [SID],
        NOW,
        listed={SID: (OPEN.activity_marker, last_interaction)},
        fingerprints={SID: OPEN.fingerprint},
    )


async def test_a_close_before_the_background_baseline_is_still_a_session_updated(
    store: SqliteStore,
) -> None:
    await begin_watch(store, "2015-07-30T20:00:01Z")
    twilio = FakeTwilio()
    twilio.add(1)  # existed when the watch began: baseline
    twilio.add(2)  # came after: an event
    await poller_of(store, twilio).poll(SERVICE, SID, session=CLOSED, status="closed")
    assert await queued(store, "all") == ["interaction.created", "session.updated"]


async def test_a_listed_time_without_an_offset_splits_the_baseline_as_utc(
    store: SqliteStore,
) -> None:
    await begin_watch(store, "2015-07-30T20:00:01")  # no offset: taken as UTC, never a crash
    twilio = FakeTwilio()
    twilio.add(1)
    twilio.add(2)
    outcome = await poller_of(store, twilio).poll(SERVICE, SID, session=OPEN)
    assert outcome.ok and await queued(store, "all") == ["interaction.created"]


@dataclass
class ClosingTwilio(FakeTwilio):
    """Closes the session, after one more interaction, while its Session is being fetched."""

    close_on_fetch: bool = False

    async def fetch_session(self, service_sid: str, session_sid: str) -> Session:
        if self.close_on_fetch:
            self.add(3)
            self.record = CLOSED
        return await super().fetch_session(service_sid, session_sid)


async def test_a_session_that_closes_between_its_listing_and_its_fetch_loses_nothing(
    store: SqliteStore,
) -> None:
    twilio = ClosingTwilio()
    twilio.add(1)
    poller = poller_of(store, twilio)
    await poller.poll(SERVICE, SID)  # first sight: the baseline and the open Session
    twilio.add(2)
    twilio.close_on_fetch = True
    await poller.poll(SERVICE, SID)  # lists 1, 2; the fetch finds it closed after 3
    assert await queued(store, "all") == [
        "interaction.created",
        "interaction.created",
        "session.updated",
    ]
    assert set(await store.known(SID)) == {f"KI{n:032d}" for n in (1, 2, 3)}
