"""The Slack sink: readable messages within Slack's limits, escaping, pacing, threads, errors."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from poller.config import SlackSinkConfig
from poller.errors import (
    ConfigError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.events import Event, EventType
from poller.observe.metrics import REGISTRY
from poller.sinks.samples import SAMPLE_BODY, sample_event
from poller.sinks.slack import SlackSink
from poller.sinks.slack_api import Pacer
from poller.sinks.slack_blocks import (
    MAX_SECTION_TEXT,
    digest_message,
    escape,
    event_message,
    truncation_marker,
)
from tests.clock import FakeClock
from tests.fake_slack import (
    TOKEN,
    WEBHOOK_PATH,
    FakeSlack,
    fake_slack_in_thread,
    validate_message,
)
from tests.sink_contract_cases import MemoryThreads

SESSION_A = "KC" + "a" * 32
SESSION_B = "KC" + "b" * 32
HOSTILE = "<!channel> hi <@U123> see <https://evil.example|click> &amp; <!here|here>"
# Our own markup may use "<" only for time tokens; anything else would ping or link.
QUOTE_MARK = re.compile(r"^> ", re.MULTILINE)
OWN_MARKUP = re.compile(r"<!date\^-?\d+\^\{date_short_pretty\} \{time_secs\}\|[^<>|]*>")


def make_event(
    *,
    session_sid: str = SESSION_A,
    kind: str = "message",
    data: Mapping[str, Any] | None = None,
    event_type: EventType = EventType.CREATED,
    changes: Mapping[str, tuple[str | None, str | None]] | None = None,
    inbound: str | None = "received",
    outbound: str | None = "delivered",
    timestamp: str = "2026-11-27T10:00:05Z",
    n: int = 1,
) -> Event:
    sid = f"KI{n:032x}"
    interaction: dict[str, Any] = {
        "sid": sid,
        "service_sid": "KS" + "a" * 32,
        "session_sid": session_sid,
        "account_sid": "AC" + "a" * 32,
        "data": json.dumps({"body": "hello"} if data is None else dict(data)),
        "type": kind,
        "date_created": "2026-11-27T10:00:00Z",
        "date_updated": timestamp,
        "inbound_participant_sid": "KP" + "a" * 32,
        "inbound_resource_status": inbound,
        "outbound_participant_sid": "KP" + "b" * 32,
        "outbound_resource_status": outbound,
    }
    return Event(
        id=f"evt_{n:032x}",
        type=event_type,
        service_sid=interaction["service_sid"],
        session_sid=session_sid,
        interaction_sid=sid,
        interaction=interaction,
        timestamp=timestamp,
        changes=changes,
        sort_key=f"1 {sid}",
    )


def texts(message: Mapping[str, Any]) -> list[str]:
    """Every string Slack would render from ``message``: text, header, sections, fields."""
    found = [message["text"]]
    for block in message["blocks"]:
        if "text" in block:
            found.append(block["text"]["text"])
        found += [item["text"] for item in block.get("fields", [])]
        found += [item["text"] for item in block.get("elements", [])]
    return found


def markup_outside_own(message: Mapping[str, Any]) -> list[str]:
    """Return every ``<`` or ``>`` that is not our own: time tokens and quote marks."""
    own_removed = (QUOTE_MARK.sub("", OWN_MARKUP.sub("", text)) for text in texts(message))
    return [c for text in own_removed for c in text if c in "<>"]


def slack_config(**values: Any) -> SlackSinkConfig:
    return SlackSinkConfig.model_validate({"name": "support", "type": "slack", **values})


# -- message building ------------------------------------------------------------------------


def test_escape_turns_mentions_and_links_into_literal_text() -> None:
    assert escape("<!channel>") == "&lt;!channel&gt;"
    assert escape("<@U123>") == "&lt;@U123&gt;"
    assert escape("<https://x|y>") == "&lt;https://x|y&gt;"
    assert escape("&amp;") == "&amp;amp;"


def test_every_twilio_value_in_a_message_is_escaped() -> None:
    event = make_event(
        data={"body": HOSTILE},
        kind="<!here>",
        inbound="<@U999>",
        outbound="<https://a|b>",
        event_type=EventType.UPDATED,
        changes={"outbound_resource_status": ("<!channel>", "<@U1>")},
    )
    message = event_message(event, include_data=True)
    assert markup_outside_own(message) == []
    assert "&lt;!channel&gt; hi &lt;@U123&gt;" in json.dumps(message)
    assert validate_message(message) is None


def test_message_reads_like_a_message_event() -> None:
    message = event_message(make_event(data={"body": "Your driver is here"}), include_data=True)
    assert message["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "New message", "emoji": True},
    }
    fields = [item["text"] for item in message["blocks"][1]["fields"]]
    assert fields[:3] == [
        f"*Session*\n`{SESSION_A}`",
        "*Type*\nmessage",
        f"*Direction*\n`KP{'a' * 32}` → `KP{'b' * 32}`",
    ]
    assert "*Time*\n<!date^1795773605^" in fields[5]
    assert message["blocks"][2]["text"]["text"] == "*Message*\n> Your driver is here"
    assert "Event `evt_" in message["blocks"][-1]["elements"][0]["text"]
    assert message["text"] == f"New message in session {SESSION_A}: Your driver is here"


def test_multiline_body_is_quoted_on_every_line() -> None:
    message = event_message(make_event(data={"body": "one\n\nthree"}), include_data=True)
    assert message["blocks"][2]["text"]["text"] == "*Message*\n> one\n> \n> three"


def test_long_body_is_cut_with_a_marker_and_stays_valid() -> None:
    body = "x" * 5000
    message = event_message(make_event(data={"body": body}), include_data=True)
    section = message["blocks"][2]["text"]["text"]
    assert len(section) <= MAX_SECTION_TEXT
    shown = section.removeprefix("*Message*\n> ").split("…")[0]
    assert section.endswith(truncation_marker(5000 - len(shown)))
    assert len(shown) > 2900
    assert validate_message(message) is None


def test_truncation_never_cuts_an_escaped_character_in_half() -> None:
    message = event_message(make_event(data={"body": "&" * 5000}), include_data=True)
    section = message["blocks"][2]["text"]["text"]
    shown = section.removeprefix("*Message*\n> ").split("…")[0]
    assert shown == "&amp;" * (len(shown) // 5)
    assert section.endswith(truncation_marker(5000 - len(shown) // 5))


def test_include_data_false_leaves_the_body_out() -> None:
    message = event_message(make_event(data={"body": "secret plans"}), include_data=False)
    assert "secret plans" not in json.dumps(message)
    assert validate_message(message) is None


def test_call_shows_its_duration() -> None:
    event = make_event(kind="voice", data={"duration": "3723"}, outbound="completed")
    message = event_message(event, include_data=True)
    assert message["blocks"][0]["text"]["text"] == "New call"
    assert message["blocks"][2]["text"]["text"] == "*Duration*\n1 h 2 min 3 s"


@pytest.mark.parametrize(
    ("kind", "outbound", "headline"),
    [
        ("message", "delivered", "Message status changed"),
        ("message", "undelivered", "Message undelivered"),
        ("voice", "busy", "Call busy"),
        ("unknown", "failed", "Interaction failed"),
    ],
)
def test_update_shows_its_changes_under_a_headline(kind: str, outbound: str, headline: str) -> None:
    event = make_event(
        kind=kind,
        event_type=EventType.UPDATED,
        outbound=outbound,
        changes={"outbound_resource_status": ("sent", outbound)},
    )
    message = event_message(event, include_data=True)
    assert message["blocks"][0]["text"]["text"] == headline
    sections = [
        b["text"]["text"] for b in message["blocks"] if b["type"] == "section" and "text" in b
    ]
    changes = [text for text in sections if text.startswith("*Changes*")]
    assert changes == [f"*Changes*\n• Outbound status: sent → {outbound}"]


hostile_text = st.text(
    alphabet=st.sampled_from(["<", ">", "&", "!", "@", "|", "\n", "*", "a", "é", "😀", " "]),
    max_size=6000,
)
optional_text = st.none() | st.text(max_size=300) | hostile_text


@st.composite
def random_events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(["message", "voice", "unknown", "<!here>"]))
    data: dict[str, Any] = {"body": draw(hostile_text)} if draw(st.booleans()) else {}
    if draw(st.booleans()):
        data["duration"] = draw(st.text(max_size=30) | st.integers().map(str))
    changes = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(
                ["date_updated", "inbound_resource_status", "outbound_resource_status"]
            ),
            st.tuples(optional_text, optional_text),
            min_size=1,
        )
    )
    return make_event(
        kind=kind,
        data=data,
        event_type=EventType.CREATED if changes is None else EventType.UPDATED,
        changes=changes,
        inbound=draw(optional_text),
        outbound=draw(optional_text),
        session_sid=draw(st.sampled_from([SESSION_A, SESSION_B, "<!channel>" * 40])),
        timestamp=draw(st.sampled_from(["2026-11-27T10:00:05Z", "0001-01-01T00:00:00", "?"])),
        n=draw(st.integers(min_value=0, max_value=2**64)),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=random_events(), include_data=st.booleans())
def test_any_event_message_is_within_limits_and_never_pings(
    event: Event, include_data: bool
) -> None:
    message = event_message(event, include_data=include_data)
    assert validate_message(message) is None
    assert markup_outside_own(message) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(random_events(), min_size=1, max_size=40), include_data=st.booleans())
def test_any_digest_is_within_limits_and_never_pings(
    events: list[Event], include_data: bool
) -> None:
    message = digest_message(events, include_data=include_data)
    assert validate_message(message) is None
    assert markup_outside_own(message) == []


def test_digest_counts_by_session_and_type_and_lists_the_newest() -> None:
    events = [
        make_event(
            session_sid=f"KC{i % 12:032x}",
            n=i,
            timestamp=f"2026-11-27T10:{i:02d}:00Z",
            event_type=EventType.UPDATED if i % 4 == 0 else EventType.CREATED,
            changes={"outbound_resource_status": ("sent", "delivered")} if i % 4 == 0 else None,
        )
        for i in range(40)
    ]
    message = digest_message(events, include_data=True)
    blocks = message["blocks"]
    assert message["text"] == "40 Proxy events in 12 sessions"
    by_session = blocks[1]["text"]["text"].split("\n")
    assert by_session[0] == "*By session*"
    assert by_session[1] == f"• `KC{0:032x}`: 4"
    assert by_session[-1] == "_and 2 more_"
    assert len(by_session) == 1 + 10 + 1
    assert blocks[2]["text"]["text"] == (
        "*By type*\n• New message: 30\n• Message status changed: 10"
    )
    newest = blocks[3]["text"]["text"].split("\n")
    assert newest[0] == "*Newest*"
    assert "10:39:00 UTC" in newest[1]
    assert "10:35:00 UTC" in newest[5]
    assert newest[-1] == "_and 35 more_"
    assert validate_message(message) is None


# -- the fake Slack --------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeSlack]:
    async with FakeSlack(clock=clock.monotonic) as server:
        yield server


MakeSink = Callable[..., SlackSink]


@pytest.fixture
async def make_sink(fake: FakeSlack, clock: FakeClock) -> AsyncIterator[MakeSink]:
    built: list[SlackSink] = []

    def make(
        *,
        api: bool = False,
        threads: MemoryThreads | None = None,
        unchecked_template: str | None = None,
        **values: Any,
    ) -> SlackSink:
        destination = (
            {"token": TOKEN, "channel": "C0PROXY", "api_base_url": fake.api_base_url}
            if api
            else {"webhook_url": fake.webhook_url}
        )
        config = slack_config(**destination, **values)
        if unchecked_template is not None:  # one the config would refuse, as if it got past
            config = config.model_copy(update={"template": unchecked_template})
        sink = SlackSink(
            config,
            store=threads or MemoryThreads(),
            clock=clock.monotonic,
            sleep=clock.sleep,
        )
        built.append(sink)
        return sink

    yield make
    for sink in built:
        await sink.aclose()


async def test_fake_slack_refuses_a_second_message_within_a_second(fake: FakeSlack) -> None:
    message = event_message(make_event(), include_data=True)
    async with httpx.AsyncClient() as client:
        first = await client.post(fake.webhook_url, json=message)
        second = await client.post(fake.webhook_url, json=message)
    assert (first.status_code, first.text) == (200, "ok")
    assert (second.status_code, second.headers["retry-after"]) == (429, "1")
    assert [r.reason for r in fake.rejected] == ["ratelimited"]


def _blocks(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"text": "fallback", "blocks": list(blocks)}


SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "ok"}}
BROKEN_PAYLOADS = {
    "51 blocks": _blocks(*[SECTION] * 51),
    "section text 3001": _blocks(
        {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    ),
    "field 2001": _blocks({"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}),
    "11 fields": _blocks({"type": "section", "fields": [{"type": "mrkdwn", "text": "x"}] * 11}),
    "header 151": _blocks({"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}),
    "header mrkdwn": _blocks({"type": "header", "text": {"type": "mrkdwn", "text": "x"}}),
    "no fallback text": {"blocks": [SECTION]},
}


@pytest.mark.parametrize("name", [*BROKEN_PAYLOADS, "invalid JSON"])
async def test_fake_slack_rejects_payloads_breaking_the_limits(fake: FakeSlack, name: str) -> None:
    content = b"{nope" if name == "invalid JSON" else json.dumps(BROKEN_PAYLOADS[name]).encode()
    api_body = (
        content
        if name == "invalid JSON"
        else json.dumps({"channel": "C1", **BROKEN_PAYLOADS[name]}).encode()
    )
    async with httpx.AsyncClient() as client:
        hook = await client.post(fake.webhook_url, content=content)
        api = await client.post(
            fake.api_base_url + "/chat.postMessage",
            content=api_body,
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert (hook.status_code, hook.text) == (400, "invalid_payload")
    assert api.json()["ok"] is False
    assert api.json()["error"] in {"invalid_blocks", "invalid_json"}
    assert fake.accepted == []


# -- the sink over real HTTP -----------------------------------------------------------------


async def test_three_hundred_events_arrive_paced_with_no_rejection(
    fake: FakeSlack, clock: FakeClock, make_sink: MakeSink
) -> None:
    """The fake and the sink share a FakeClock: the pacer's sleeps advance it, the fake
    measures the gaps on it, so 300 paced seconds pass in no real time."""
    sink = make_sink()
    bodies = ["hi", HOSTILE, "é😀" * 3000, "&" * 5000, "line\n" * 700]
    start = clock.monotonic()
    for i in range(300):
        event = make_event(n=i, session_sid=f"KC{i % 7:032x}", data={"body": bodies[i % 5]})
        await sink.send(event)
    assert fake.rejected == []
    assert len(fake.accepted) == 300
    gaps = [b.at - a.at for a, b in itertools.pairwise(fake.accepted)]
    assert min(gaps) >= 1.0
    assert clock.monotonic() - start == pytest.approx(299.0)


async def test_pacer_lets_concurrent_callers_through_one_per_interval() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock.monotonic, sleep=clock.sleep)
    passed: list[float] = []

    async def caller() -> None:
        async with pacer.turn() as held:
            assert held == 0.0
            passed.append(clock.monotonic())

    await asyncio.gather(*(caller() for _ in range(5)))
    assert [t - passed[0] for t in passed] == [0, 1, 2, 3, 4]


async def test_pacer_counts_the_interval_from_the_end_of_a_slow_post() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock.monotonic, sleep=clock.sleep)
    async with pacer.turn():
        await clock.sleep(0.4)  # the answer took 0.4 s
    ended = clock.monotonic()
    async with pacer.turn():
        assert clock.monotonic() - ended == pytest.approx(1.0)


async def test_pacer_returns_a_long_pause_instead_of_sleeping() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock.monotonic, sleep=clock.sleep, max_wait=5.0)
    async with pacer.turn() as held:
        assert held == 0.0
    pacer.hold_off(120.0)
    async with pacer.turn() as held:
        assert held == pytest.approx(120.0)
    assert clock.slept == []


async def test_rate_limit_answer_is_retryable_and_paces_the_next_message(
    fake: FakeSlack, clock: FakeClock, make_sink: MakeSink
) -> None:
    sink = make_sink()
    fake.fail_webhook(429, "rate_limited", retry_after="3")
    with pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert info.value.retry_after == pytest.approx(3.0)
    before = clock.monotonic()
    await sink.send(make_event())
    assert clock.monotonic() - before == pytest.approx(3.0)
    assert len(fake.accepted) == 1


async def test_long_retry_after_fails_fast_without_a_request(
    fake: FakeSlack, clock: FakeClock, make_sink: MakeSink
) -> None:
    sink = make_sink()
    fake.fail_webhook(429, "rate_limited", retry_after="600")
    with pytest.raises(RetryableDeliveryError):
        await sink.send(make_event())
    with pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert info.value.retry_after == pytest.approx(600.0)
    assert len(fake.rejected) == 1
    assert clock.slept == []


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, "invalid_payload", PermanentDeliveryError),
        (400, "user_not_found", PermanentDeliveryError),
        (400, "too_many_attachments", PermanentDeliveryError),
        (403, "action_prohibited", PermanentDeliveryError),
        (403, "posting_to_general_channel_denied", PermanentDeliveryError),
        (404, "channel_not_found", PermanentDeliveryError),
        (410, "channel_is_archived", PermanentDeliveryError),
        (404, "no_service", SinkDisabledError),
        (400, "no_service_id", SinkDisabledError),
        (404, "no_team", SinkDisabledError),
        (403, "team_disabled", SinkDisabledError),
        (403, "invalid_token", SinkDisabledError),
        (410, "", SinkDisabledError),
        (500, "rollup_error", RetryableDeliveryError),
        (503, "<html>busy</html>", RetryableDeliveryError),
        (408, "", RetryableDeliveryError),
        (302, "", RetryableDeliveryError),
        (418, "teapot", PermanentDeliveryError),
    ],
)
async def test_webhook_errors_are_classified(
    fake: FakeSlack, make_sink: MakeSink, status: int, body: str, error: type[Exception]
) -> None:
    fake.fail_webhook(status, body)
    with capture_logs() as logs, pytest.raises(error) as info:
        await make_sink().send(make_event())
    assert type(info.value) is error
    assert info.value.status == status  # type: ignore[attr-defined]
    [failure] = [line for line in logs if line["event"] == "slack_delivery_failed"]
    assert failure["status"] == status
    assert failure["meaning"]


async def test_archived_channel_is_logged_with_what_to_do(
    fake: FakeSlack, make_sink: MakeSink
) -> None:
    fake.fail_webhook(410, "channel_is_archived")
    with capture_logs() as logs, pytest.raises(PermanentDeliveryError) as info:
        await make_sink().send(make_event())
    [failure] = [line for line in logs if line["event"] == "slack_delivery_failed"]
    assert failure["error"] == "channel_is_archived"
    assert "unarchive" in failure["meaning"]
    assert "channel_is_archived" in str(info.value)


async def test_unknown_webhook_disables_the_sink(fake: FakeSlack, clock: FakeClock) -> None:
    config = slack_config(webhook_url=fake.base_url + "/services/T1/B1/revoked")
    sink = SlackSink(config, store=MemoryThreads(), clock=clock.monotonic, sleep=clock.sleep)
    with pytest.raises(SinkDisabledError, match="no_service"):
        await sink.send(make_event())
    await sink.aclose()


async def test_webhooks_are_paced_separately(fake: FakeSlack, clock: FakeClock) -> None:
    other = fake.add_webhook("OTHER")
    sinks = [
        SlackSink(slack_config(webhook_url=url), store=MemoryThreads(), clock=clock.monotonic)
        for url in (fake.webhook_url, other)
    ]
    for sink in sinks:
        await sink.send(make_event())
        await sink.aclose()
    assert [post.at for post in fake.accepted] == [clock.monotonic(), clock.monotonic()]
    assert fake.rejected == []


async def test_web_api_threads_each_session(fake: FakeSlack, make_sink: MakeSink) -> None:
    threads = MemoryThreads()
    sink = make_sink(api=True, threads=threads)
    sessions = [SESSION_A, SESSION_B, SESSION_A, SESSION_B, SESSION_A]
    for i, session in enumerate(sessions):
        await sink.send(make_event(session_sid=session, n=i))
    assert fake.rejected == []
    parents = [post for post in fake.accepted if post.thread_ts is None]
    assert [p.payload["blocks"][1]["fields"][0]["text"] for p in parents] == [
        f"*Session*\n`{SESSION_A}`",
        f"*Session*\n`{SESSION_B}`",
    ]
    first_a, first_b = parents[0].ts, parents[1].ts
    assert threads.threads == {("support", SESSION_A): first_a, ("support", SESSION_B): first_b}
    assert first_a is not None
    assert first_b is not None
    assert len(fake.thread_of(first_a)) == 2
    assert len(fake.thread_of(first_b)) == 1
    assert all(post.target == "C0PROXY" for post in fake.accepted)
    assert fake.accepted[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_web_api_digest_goes_to_the_channel_not_a_thread(
    fake: FakeSlack, make_sink: MakeSink
) -> None:
    threads = MemoryThreads()
    sink = make_sink(api=True, threads=threads)
    await sink.send(make_event())
    await sink.send_digest([make_event(n=i) for i in range(8)])
    assert [post.thread_ts for post in fake.accepted] == [None, None]
    assert fake.accepted[1].payload["text"] == "8 Proxy events in 1 session"
    assert list(threads.threads.values()) == [fake.accepted[0].ts]


async def test_webhook_digest_is_one_message(fake: FakeSlack, make_sink: MakeSink) -> None:
    sink = make_sink()
    assert sink.digest_threshold == 5
    await sink.send_digest([make_event(n=i, data={"body": HOSTILE}) for i in range(9)])
    [post] = fake.accepted
    assert post.payload["text"] == "9 Proxy events in 1 session"
    assert markup_outside_own(post.payload) == []


@pytest.mark.parametrize(
    ("error", "status", "expected"),
    [
        ("ratelimited", 429, RetryableDeliveryError),
        ("ratelimited", 200, RetryableDeliveryError),
        ("internal_error", 200, RetryableDeliveryError),
        ("a_new_error_slack_added", 200, RetryableDeliveryError),
        ("channel_not_found", 200, PermanentDeliveryError),
        ("not_in_channel", 200, PermanentDeliveryError),
        ("is_archived", 200, PermanentDeliveryError),
        ("msg_too_long", 200, PermanentDeliveryError),
        ("invalid_blocks", 200, PermanentDeliveryError),
        ("invalid_arguments", 200, PermanentDeliveryError),
        ("invalid_auth", 200, SinkDisabledError),
        ("account_inactive", 200, SinkDisabledError),
        ("token_revoked", 200, SinkDisabledError),
        ("not_authed", 200, SinkDisabledError),
        ("fatal_error", 500, RetryableDeliveryError),
    ],
)
async def test_web_api_ok_false_is_a_classified_failure(
    fake: FakeSlack, make_sink: MakeSink, error: str, status: int, expected: type[Exception]
) -> None:
    threads = MemoryThreads()
    fake.fail_api(error, status=status, retry_after="4" if error == "ratelimited" else None)
    with pytest.raises(expected, match=error) as info:
        await make_sink(api=True, threads=threads).send(make_event())
    assert type(info.value) is expected
    if error == "ratelimited":
        assert isinstance(info.value, RetryableDeliveryError)
        assert info.value.retry_after == pytest.approx(4.0)
    assert threads.threads == {}


async def test_web_api_ratelimited_in_a_200_answer_is_counted(
    fake: FakeSlack, make_sink: MakeSink
) -> None:
    sink = make_sink(api=True)
    sample = {"sink": sink.name}
    before = REGISTRY.get_sample_value("poller_sink_rate_limited_total", sample) or 0.0
    fake.fail_api("ratelimited", status=200, retry_after="4")
    with pytest.raises(RetryableDeliveryError):
        await sink.send(make_event())
    after = REGISTRY.get_sample_value("poller_sink_rate_limited_total", sample)
    assert after == before + 1


async def test_web_api_wrong_token_disables_the_sink(fake: FakeSlack, clock: FakeClock) -> None:
    config = slack_config(token="xoxb-wrong", channel="C1", api_base_url=fake.api_base_url)
    sink = SlackSink(config, store=MemoryThreads(), clock=clock.monotonic, sleep=clock.sleep)
    with pytest.raises(SinkDisabledError, match="invalid_auth"):
        await sink.send(make_event())
    await sink.aclose()


async def test_web_api_answer_that_is_not_json_is_retryable() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>"))
    config = slack_config(token=TOKEN, channel="C1")
    sink = SlackSink(config, store=MemoryThreads(), transport=transport)
    with pytest.raises(RetryableDeliveryError, match="not the JSON"):
        await sink.send(make_event())
    await sink.aclose()


# -- templates -------------------------------------------------------------------------------


async def test_template_renders_the_message_with_escaped_variables(
    fake: FakeSlack, make_sink: MakeSink
) -> None:
    template = (
        "<!here> {{ event.type }} in {{ session_sid }}: {{ body }} "
        "({{ interaction.outbound_resource_status }}, {{ changes }})"
    )
    sink = make_sink(template=template)
    await sink.send(make_event(data={"body": HOSTILE}, outbound="<@U2>"))
    [post] = fake.accepted
    expected = f"<!here> interaction.created in {SESSION_A}: {escape(HOSTILE)} (&lt;@U2&gt;, None)"
    assert post.payload["text"] == expected
    assert post.payload["blocks"][0]["text"]["text"] == expected


async def test_template_sees_no_data_when_include_data_is_false(
    fake: FakeSlack, make_sink: MakeSink
) -> None:
    sink = make_sink(template="{{ body }} {{ interaction.data is defined }}", include_data=False)
    await sink.send(make_event(data={"body": "secret plans"}))
    assert fake.accepted[0].payload["text"] == "None False"


def _failures(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "poller_template_failures_total", {"sink": "support", "reason": reason}
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ event.nope }}", "undefined"),
        ("{{ 1 / 0 }}", "error"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
        ("{% if false %}x{% endif %}   ", "empty"),
        ("{{ 'x' * 10**9 }}", "too_large"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}",
            "range_too_long",
        ),
        (
            "{% for i in range(1000) %}{% for j in range(1000) %}{{ j }}{% endfor %}{% endfor %}",
            "output_too_long",
        ),
    ],
)
async def test_template_failing_at_run_time_falls_back_to_the_default_message(
    fake: FakeSlack, make_sink: MakeSink, template: str, reason: str
) -> None:
    sink = make_sink(unchecked_template=template)
    before = _failures(reason)
    with capture_logs() as logs:
        await sink.send(make_event(data={"body": "hello"}))
    [post] = fake.accepted
    assert post.payload == event_message(make_event(data={"body": "hello"}), include_data=True)
    [warning] = [line for line in logs if line["log_level"] == "warning"]
    assert (warning["event"], warning["sink"], warning["reason"]) == (
        "template_failed",
        "support",
        reason,
    )
    assert _failures(reason) == before + 1


async def test_template_that_fails_only_for_some_events_is_accepted_and_falls_back_on_them(
    fake: FakeSlack, make_sink: MakeSink
) -> None:
    sink = make_sink(template="{% for field, v in changes.items() %}{{ field }}{% endfor %}")
    updated = make_event(
        event_type=EventType.UPDATED, changes={"outbound_resource_status": ("sent", "failed")}
    )
    await sink.send(updated)
    await sink.send(make_event(n=2))
    assert fake.accepted[0].payload["text"] == "outbound_resource_status"
    assert fake.accepted[1].payload == event_message(make_event(n=2), include_data=True)


async def test_template_out_of_operations_falls_back_to_the_default_message(
    fake: FakeSlack, make_sink: MakeSink
) -> None:
    slow = "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}x"
    sink = make_sink(unchecked_template=slow)
    with capture_logs() as logs:
        await sink.send(make_event())
    [reason] = [line["reason"] for line in logs if line["event"] == "template_failed"]
    assert reason in ("too_many_operations", "too_slow")  # whichever bound comes first
    assert fake.accepted[0].payload == event_message(make_event(), include_data=True)


def test_template_that_does_not_compile_is_a_config_error() -> None:
    config = SlackSinkConfig.model_construct(
        name="support",
        type="slack",
        webhook_url=None,
        token=None,
        channel=None,
        include_data=True,
        digest_threshold=5,
        template="{% if %}",
        api_base_url="https://slack.com/api",
        timeout_seconds=10.0,
    )
    with pytest.raises(ConfigError, match=r"sinks\.support\.template"):
        SlackSink(config, store=MemoryThreads())


# -- secrets and the sample ------------------------------------------------------------------


async def test_no_token_webhook_url_or_body_in_any_log_line_or_error(
    fake: FakeSlack, make_sink: MakeSink
) -> None:
    body = "the customer's private words"
    event = make_event(data={"body": body})
    errors: list[str] = []

    async def attempt(sink: SlackSink) -> None:
        try:
            await sink.send(event)
        except (RetryableDeliveryError, PermanentDeliveryError, SinkDisabledError) as exc:
            errors.append(str(exc))

    with capture_logs() as logs:
        hook = make_sink(unchecked_template="{{ nope }}")
        await attempt(hook)
        for status, answer in [(500, "rollup_error"), (404, "no_service"), (429, "x")]:
            fake.fail_webhook(status, answer, retry_after="1")
            await attempt(hook)
        api = make_sink(api=True, unchecked_template="{{ nope }}")
        await attempt(api)
        for error, status in [("invalid_auth", 200), ("ratelimited", 429), ("fatal", 500)]:
            fake.fail_api(error, status=status, retry_after="1")
            await attempt(api)
        await fake.stop()
        await attempt(make_sink())
        await attempt(make_sink(api=True))
    assert len(fake.accepted) == 2
    assert len(errors) == 8
    assert {line["event"] for line in logs} >= {
        "template_failed",
        "slack_delivery_failed",
        "slack_transport_error",
    }
    text = repr(logs) + "\n".join(errors)
    for secret in (TOKEN, WEBHOOK_PATH.rsplit("/", 1)[1], body):
        assert secret not in text


async def test_sample_event_is_a_realistic_created_message(
    fake: FakeSlack, make_sink: MakeSink
) -> None:
    moment = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    event = sample_event(moment)
    assert event.type is EventType.CREATED
    assert event.message_text() == SAMPLE_BODY
    assert event.timestamp == "2026-11-27T10:00:00Z"
    assert sample_event(moment).id == event.id
    assert sample_event(datetime(2026, 11, 27, 10, 1, tzinfo=UTC)).id != event.id
    await make_sink().send(event)
    assert fake.accepted[0].payload["blocks"][2]["text"]["text"] == f"*Message*\n> {SAMPLE_BODY}"


def test_fake_slack_in_a_thread_serves_blocking_clients() -> None:
    message = event_message(make_event(), include_data=True)
    with fake_slack_in_thread() as fake, httpx.Client() as client:
        answer = client.post(fake.webhook_url, json=message)
        refused = client.post(fake.webhook_url, json={"blocks": []})
    assert (answer.status_code, refused.status_code) == (200, 400)
    assert [post.payload for post in fake.accepted] == [message]
