"""The contract every sink keeps, run against each case in tests/sink_contract_cases.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from poller.config import DeliveryConfig, SlackSinkConfig, WebhookSinkConfig
from poller.delivery.dispatcher import Dispatcher
from poller.delivery.policy import DeliveryPolicy
from poller.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.events import Event
from poller.observe.metrics import REGISTRY
from poller.sinks import Sink, build_sinks
from poller.state.sqlite.store import SqliteStore
from tests.sink_contract_cases import (
    CASES,
    MESSAGE_BODY,
    Answer,
    MemoryThreads,
    SinkCase,
    make_event,
)

MakeSink = Callable[..., tuple[Sink, list[httpx.Request]]]
T0 = 1_800_000_000.0


@pytest.fixture(params=CASES, ids=lambda factory: factory.__name__.removesuffix("_case"))
def case(request: pytest.FixtureRequest) -> SinkCase:
    factory: Callable[[], SinkCase] = request.param
    return factory()


@pytest.fixture
async def make_sink(case: SinkCase) -> AsyncIterator[MakeSink]:
    built: list[Sink] = []

    def make(answer: Answer, *, include_data: bool = True) -> tuple[Sink, list[httpx.Request]]:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return answer(request)

        sink = case.build(httpx.MockTransport(handler), include_data, MemoryThreads())
        built.append(sink)
        return sink, seen

    yield make
    for sink in built:
        await sink.aclose()


def _status(status: int, headers: dict[str, str] | None = None) -> Answer:
    return lambda request: httpx.Response(status, headers=headers, text="nope")


def _raise(exc_type: type[httpx.TransportError]) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return answer


def test_sink_exposes_the_protocol_attributes(case: SinkCase) -> None:
    sink = case.build(httpx.MockTransport(case.accept), False, MemoryThreads())
    assert isinstance(sink.name, str)
    assert sink.name
    assert sink.include_data is False
    assert sink.digest_threshold is None or sink.digest_threshold >= 1


async def test_accepted_event_is_sent_in_one_request(case: SinkCase, make_sink: MakeSink) -> None:
    sink, seen = make_sink(case.accept)
    send: Callable[[Event], Awaitable[object]] = sink.send  # what it returns is checked
    assert await send(make_event()) is None
    assert len(seen) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retryable(make_sink: MakeSink, status: int) -> None:
    sink, _ = make_sink(_status(status))
    with pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert info.value.status == status


async def test_rate_limit_is_retryable_with_the_receivers_hint(make_sink: MakeSink) -> None:
    sink, _ = make_sink(_status(429, {"retry-after": "7"}))
    with pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert info.value.retry_after == pytest.approx(7.0)


def _rate_limited(sink: str) -> float:
    return REGISTRY.get_sample_value("poller_sink_rate_limited_total", {"sink": sink}) or 0.0


async def test_rate_limit_is_counted_for_the_sink_and_nothing_else(make_sink: MakeSink) -> None:
    limited, _ = make_sink(_status(429, {"retry-after": "7"}))
    failing, _ = make_sink(_status(503))
    before = _rate_limited(limited.name)
    with pytest.raises(RetryableDeliveryError):
        await limited.send(make_event())
    assert _rate_limited(limited.name) == before + 1
    before = _rate_limited(failing.name)
    with pytest.raises(RetryableDeliveryError):
        await failing.send(make_event())
    assert _rate_limited(failing.name) == before


async def test_gone_receiver_disables_the_sink(case: SinkCase, make_sink: MakeSink) -> None:
    sink, _ = make_sink(case.gone)
    with pytest.raises(SinkDisabledError):
        await sink.send(make_event())


@pytest.mark.parametrize(
    "exc_type", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError]
)
async def test_transport_failures_are_retryable(
    make_sink: MakeSink, exc_type: type[httpx.TransportError]
) -> None:
    sink, _ = make_sink(_raise(exc_type))
    with pytest.raises(RetryableDeliveryError) as info:
        await sink.send(make_event())
    assert isinstance(info.value.__cause__, exc_type)


@pytest.mark.parametrize("include_data", [True, False])
async def test_message_body_is_sent_only_when_include_data(
    case: SinkCase, make_sink: MakeSink, include_data: bool
) -> None:
    sink, seen = make_sink(case.accept, include_data=include_data)
    await sink.send(make_event())
    assert (MESSAGE_BODY in seen[0].content.decode()) is include_data


async def test_no_secret_or_body_in_logs_or_errors(case: SinkCase, make_sink: MakeSink) -> None:
    answers = [case.accept, _status(500), _status(400), case.gone, _raise(httpx.ConnectError)]
    errors: list[str] = []
    with capture_logs() as logs:
        for answer in answers:
            sink, _ = make_sink(answer)
            try:
                await sink.send(make_event())
            except DeliveryError as exc:
                errors.append(str(exc))
    assert len(errors) >= 3
    text = repr(logs) + "\n".join(errors)
    for secret in (*case.secrets, MESSAGE_BODY):
        assert secret not in text


async def test_digest_is_one_request_when_the_sink_digests(
    case: SinkCase, make_sink: MakeSink
) -> None:
    sink, seen = make_sink(case.accept)
    if sink.digest_threshold is None:
        pytest.skip("this sink never digests: the dispatcher sends its events one by one")
    events = [make_event(session_sid=f"KC{i:032x}") for i in range(sink.digest_threshold + 3)]
    await sink.send_digest(events)
    assert len(seen) == 1


async def test_permanent_refusal_is_not_retryable(case: SinkCase, make_sink: MakeSink) -> None:
    sink, seen = make_sink(case.refused)
    with pytest.raises(PermanentDeliveryError):
        await sink.send(make_event())
    assert len(seen) == 1


async def _enqueue(store: SqliteStore, sink: Sink, event: Event) -> None:
    await store.commit_poll(
        event.service_sid, event.session_sid, fetched={}, events=[(event, [sink.name])], now=T0
    )


def _dispatcher(store: SqliteStore, sink: Sink, max_attempts: int = 5) -> Dispatcher:
    return Dispatcher(store, [sink], DeliveryPolicy(DeliveryConfig(max_attempts=max_attempts)))


async def test_a_failed_delivery_is_retried_until_the_sink_accepts_it(
    case: SinkCase, make_sink: MakeSink, tmp_path: Path
) -> None:
    answers = iter([_status(503), case.accept])
    sink, seen = make_sink(lambda request: next(answers)(request))
    event = make_event()
    async with SqliteStore.open(tmp_path / "state.db") as store:
        await _enqueue(store, sink, event)
        dispatcher = _dispatcher(store, sink)
        assert (await dispatcher.run_once(ignore_timers=True)).sinks[sink.name].failed == 1
        assert await store.pending_count(sink.name) == 1
        assert (await dispatcher.run_once(ignore_timers=True)).sinks[sink.name].delivered == 1
        assert await store.pending_count(sink.name) == 0
    assert len(seen) == 2


async def test_refused_or_exhausted_deliveries_are_dead_lettered_and_kept(
    case: SinkCase, make_sink: MakeSink, tmp_path: Path
) -> None:
    refused, refused_seen = make_sink(case.refused)
    failing, failing_seen = make_sink(_status(503))
    for n, sink in enumerate((refused, failing)):
        async with SqliteStore.open(tmp_path / f"state-{n}.db") as store:
            await _enqueue(store, sink, make_event())
            dispatcher = _dispatcher(store, sink, max_attempts=2)
            for _ in range(2):
                await dispatcher.run_once(ignore_timers=True)
            (dead,) = await store.dead_letters(sink.name)
            assert await store.pending_count(sink.name) == 0
    assert len(refused_seen) == 1  # never retried
    assert len(failing_seen) == 2  # retried up to max_attempts
    assert dead.last_status == 503


async def test_build_sinks_makes_one_sink_per_config_by_type() -> None:
    configs = (
        WebhookSinkConfig.model_validate(
            {"name": "hooks", "type": "webhook", "url": "https://receiver.example/h"}
        ),
        SlackSinkConfig.model_validate(
            {
                "name": "chat",
                "type": "slack",
                "webhook_url": "https://hooks.slack.com/services/T/B/x",
            }
        ),
    )
    sinks = build_sinks(configs, store=MemoryThreads())
    try:
        assert [type(s).__name__ for s in sinks] == ["WebhookSink", "SlackSink"]
        assert [s.name for s in sinks] == ["hooks", "chat"]
    finally:
        for sink in sinks:
            await sink.aclose()


async def test_build_sinks_passes_the_transport_and_clock_to_webhooks() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    config = WebhookSinkConfig.model_validate(
        {"name": "hooks", "type": "webhook", "url": "https://receiver.example/h"}
    )
    (sink,) = build_sinks(
        [config],
        store=MemoryThreads(),
        clock=lambda: 1234.5,
        transport=httpx.MockTransport(handler),
    )
    await sink.send(make_event())
    await sink.aclose()
    assert seen[0].headers["webhook-timestamp"] == "1234"


def test_build_sinks_rejects_an_unknown_type() -> None:
    class Odd:
        name = "odd"
        type = "carrier-pigeon"

    with pytest.raises(ValueError, match="'odd': unknown type 'carrier-pigeon'"):
        build_sinks([Odd()], store=MemoryThreads())  # type: ignore[list-item]
