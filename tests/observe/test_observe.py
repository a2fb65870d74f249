"""Logging setup (format, routing, redaction) and the health/metrics HTTP endpoint."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import prometheus_client
import pytest
import structlog

from poller.observe import metrics
from poller.observe.health import HealthServer, HealthState
from poller.observe.logs import QUIET_LIBRARIES, configure_logging
from tests.clock import FakeClock

# --------------------------------------------------------------------------- logging


class TTYStream(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo configure_logging's global changes so every test starts from the same state."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    library_levels = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    config = structlog.get_config()
    yield
    structlog.contextvars.clear_contextvars()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, library_level in library_levels.items():
        logging.getLogger(name).setLevel(library_level)
    structlog.configure(**config)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def json_logging(level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    configure_logging("json", level, stream=stream)
    return stream


def test_json_line_holds_utc_timestamp_level_event_logger_and_fields() -> None:
    stream = json_logging()
    structlog.get_logger("poller.test").info("poll_finished", new=3, session_sid="KC1")

    [line] = json_lines(stream)
    assert list(line)[:4] == ["timestamp", "level", "event", "logger"]
    assert line["level"] == "info"
    assert line["event"] == "poll_finished"
    assert line["logger"] == "poller.test"
    assert (line["new"], line["session_sid"]) == (3, "KC1")
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_console_format_writes_key_value_text_not_json() -> None:
    stream = io.StringIO()
    configure_logging("console", "info", stream=stream)
    structlog.get_logger("poller.test").warning("twilio_retry", status=503, attempt=2)

    text = stream.getvalue()
    assert "twilio_retry" in text
    assert "status=503" in text
    assert "attempt=2" in text
    assert "[poller.test]" in text
    assert "\x1b[" not in text  # no colours on a stream that is not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_format_is_console_on_a_tty() -> None:
    stream = TTYStream()
    configure_logging("auto", "info", stream=stream)
    structlog.get_logger("poller.test").info("started")

    assert "started" in stream.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(stream.getvalue())


def test_auto_format_is_json_off_a_tty() -> None:
    stream = io.StringIO()
    configure_logging("auto", "info", stream=stream)
    structlog.get_logger("poller.test").info("started")

    assert json_lines(stream)[0]["event"] == "started"


def test_stdlib_logger_is_rendered_in_the_same_json_format() -> None:
    stream = json_logging()
    logging.getLogger("some.library").warning("disk %s is %d%% full", "sda", 93, extra={"k": 1})

    [line] = json_lines(stream)
    assert line["event"] == "disk sda is 93% full"
    assert line["level"] == "warning"
    assert line["logger"] == "some.library"
    assert line["k"] == 1
    assert "timestamp" in line


@pytest.mark.parametrize("library", ["httpx", "httpcore", "apscheduler", "aiohttp.access"])
def test_chatty_library_info_is_dropped_but_its_warnings_kept(library: str) -> None:
    stream = json_logging("debug")
    logging.getLogger(library).info("HTTP Request: GET https://proxy.twilio.com/v1/x")
    logging.getLogger(library).warning("connection pool is full")

    assert [line["event"] for line in json_lines(stream)] == ["connection pool is full"]


def test_level_drops_lower_structlog_and_stdlib_events() -> None:
    stream = json_logging("warning")
    log = structlog.get_logger("poller.test")
    log.info("ignored")
    logging.getLogger("poller.other").info("ignored too")
    log.error("kept")

    assert [line["event"] for line in json_lines(stream)] == ["kept"]


def test_unknown_level_is_rejected_naming_the_value() -> None:
    with pytest.raises(ValueError, match="'loud'"):
        configure_logging("json", "loud", stream=io.StringIO())


def test_second_configuration_replaces_the_first_without_duplicating_lines() -> None:
    first = json_logging()
    second = json_logging("INFO")
    structlog.get_logger("poller.test").info("once")

    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["once"]


def test_logger_used_before_configuration_follows_it(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()
    log = structlog.get_logger("poller.early")
    log.info("early")
    stream = json_logging()
    log.info("late")

    assert "late" not in capsys.readouterr().out

    assert json_lines(stream)[0]["logger"] == "poller.early"


def test_bound_contextvars_appear_on_structlog_and_stdlib_lines() -> None:
    stream = json_logging()
    structlog.contextvars.bind_contextvars(
        service_sid="KS1", session_sid="KC1", sink="ops", event_id="evt_1"
    )
    structlog.get_logger("poller.test").info("delivered")
    logging.getLogger("httpx").warning("retrying")
    structlog.contextvars.clear_contextvars()
    structlog.get_logger("poller.test").info("after")

    bound, routed, after = json_lines(stream)
    for line in (bound, routed):
        assert line["service_sid"] == "KS1"
        assert line["session_sid"] == "KC1"
        assert line["sink"] == "ops"
        assert line["event_id"] == "evt_1"
    assert "session_sid" not in after


@pytest.mark.parametrize(
    "key",
    [
        "auth_token",
        "token",
        "secret",
        "password",
        "authorization",
        "api_key_secret",
        "webhook_url",
        "body",
        "data",
        "slack_token",
        "Authorization",
    ],
)
def test_secret_named_field_is_masked(key: str) -> None:
    stream = json_logging()
    structlog.get_logger("poller.test").info("configured", **{key: "MARKER-value-42"})

    output = stream.getvalue()
    assert "MARKER-value-42" not in output
    assert json_lines(stream)[0][key] == "[REDACTED]"


def test_secret_named_keys_are_masked_inside_nested_fields() -> None:
    stream = json_logging()
    structlog.get_logger("poller.test").info(
        "request",
        request={"headers": {"Authorization": "Basic MARKER1"}, "params": [{"body": "MARKER2"}]},
        sinks=({"name": "ops", "secret": "MARKER3"},),
    )

    output = stream.getvalue()
    for marker in ("MARKER1", "MARKER2", "MARKER3"):
        assert marker not in output
    line = json_lines(stream)[0]
    assert line["sinks"][0]["name"] == "ops"
    assert line["request"]["headers"]["Authorization"] == "[REDACTED]"


SECRET_TEXTS = [
    pytest.param(
        "GET https://AC0123:MARKERtok@proxy.twilio.com/v1/Services",
        "proxy.twilio.com/v1/Services",
        id="url-with-credentials",
    ),
    pytest.param(
        "posting to https://hooks.slack.com/services/T0001/B0001/MARKERxyz now",
        "hooks.slack.com/services/***",
        id="slack-webhook-url",
    ),
    pytest.param("signing with whsec_MARKERc2VjcmV0==", "whsec_***", id="whsec"),
    pytest.param("slack token xoxb-1234-5678-MARKERabc", "xoxb-***", id="xoxb"),
]


@pytest.mark.parametrize(("text", "kept"), SECRET_TEXTS)
def test_secret_shaped_text_is_masked_in_any_field(text: str, kept: str) -> None:
    stream = json_logging()
    structlog.get_logger("poller.test").warning("failed", error=text, items=[text])

    output = stream.getvalue()
    assert "MARKER" not in output
    line = json_lines(stream)[0]
    assert kept in line["error"]
    assert kept in line["items"][0]


@pytest.mark.parametrize(("text", "kept"), SECRET_TEXTS)
def test_secret_shaped_text_is_masked_in_stdlib_messages(text: str, kept: str) -> None:
    stream = json_logging()
    logging.getLogger("some.library").warning("%s", text)

    assert "MARKER" not in stream.getvalue()
    assert kept in json_lines(stream)[0]["event"]


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_secret_in_an_exception_message_is_masked(log_format: str) -> None:
    stream = io.StringIO()
    configure_logging("json" if log_format == "json" else "console", "info", stream=stream)
    try:
        raise RuntimeError("POST https://hooks.slack.com/services/T1/B1/MARKER failed")
    except RuntimeError:
        structlog.get_logger("poller.test").exception("delivery_failed")

    output = stream.getvalue()
    assert "RuntimeError" in output
    assert "MARKER" not in output
    assert "hooks.slack.com/services/***" in output


def test_object_field_whose_repr_leaks_a_secret_is_masked() -> None:
    stream = json_logging()
    error = ValueError("https://user:MARKERpass@example.com/")
    structlog.get_logger("poller.test").warning("failed", error=error, count=2)

    assert "MARKER" not in stream.getvalue()
    assert json_lines(stream)[0]["count"] == 2


def _fail_with_a_secret_local() -> None:
    hidden_local = "plain-local-value-9f3a"
    raise KeyError(len(hidden_local))


def test_json_exception_is_a_structured_traceback_without_locals() -> None:
    stream = json_logging()
    try:
        _fail_with_a_secret_local()
    except KeyError:
        structlog.get_logger("poller.test").exception("poll_crashed")

    assert "plain-local-value-9f3a" not in stream.getvalue()
    [line] = json_lines(stream)
    [exception] = line["exception"]
    assert exception["exc_type"] == "KeyError"
    frames = exception["frames"]
    assert frames[-1]["name"] == "_fail_with_a_secret_local"
    assert all("locals" not in frame for frame in frames)


def test_console_exception_is_a_plain_traceback_without_locals() -> None:
    stream = io.StringIO()
    configure_logging("console", "info", stream=stream)
    try:
        _fail_with_a_secret_local()
    except KeyError:
        structlog.get_logger("poller.test").exception("poll_crashed")

    output = stream.getvalue()
    assert "Traceback (most recent call last)" in output
    assert "_fail_with_a_secret_local" in output
    assert "plain-local-value-9f3a" not in output


def test_stdlib_exception_is_rendered_as_a_structured_traceback() -> None:
    stream = json_logging()
    try:
        _fail_with_a_secret_local()
    except KeyError:
        logging.getLogger("apscheduler.executors").exception("job raised")

    [line] = json_lines(stream)
    assert line["event"] == "job raised"
    assert line["exception"][0]["exc_type"] == "KeyError"
    assert "plain-local-value-9f3a" not in stream.getvalue()


# --------------------------------------------------------------------------- health state


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> HealthState:
    return HealthState(
        clock=clock.monotonic,
        wall_clock=clock.time,
        liveness_timeout=60.0,
        ready_max_poll_age=150.0,
        max_outbox_age=3600.0,
    )


def test_alive_until_the_heartbeat_is_older_than_the_timeout(
    state: HealthState, clock: FakeClock
) -> None:
    clock.advance(60.0)
    assert state.alive()[0]
    clock.advance(0.5)
    ok, body = state.alive()
    assert not ok
    assert body["status"] == "stale"
    state.heartbeat()
    ok, body = state.alive()
    assert ok
    assert body["status"] == "ok"


def test_first_success_is_set_by_the_first_cycle_that_succeeded(state: HealthState) -> None:
    state.poll_failed()
    assert not state.first_success.is_set()
    state.poll_succeeded()
    assert state.first_success.is_set()
    state.poll_failed()
    assert state.first_success.is_set()


def test_ready_fails_when_the_last_success_is_too_old(state: HealthState, clock: FakeClock) -> None:
    state.poll_succeeded()
    clock.advance(150.0)
    assert state.ready()[0]
    state.poll_failed()
    clock.advance(1.0)
    ok, body = state.ready()
    assert not ok
    assert body["status"] == "unavailable"
    assert body["failed"] == ["poll"]
    assert body["checks"]["poll"]["consecutive_failures"] == 1


def test_ready_tolerates_an_outbox_exactly_at_its_max_age(
    state: HealthState, clock: FakeClock
) -> None:
    state.poll_succeeded()
    state.set_outbox_oldest(clock.time() - 3600.0)
    assert state.ready()[0]
    state.set_outbox_oldest(clock.time() - 3600.5)
    assert state.ready()[1]["failed"] == ["outbox"]
    state.set_outbox_oldest(None)
    assert state.ready()[0]


def test_for_interval_allows_three_intervals_and_a_minute(clock: FakeClock) -> None:
    state = HealthState.for_interval(30.0, clock=clock.monotonic)
    state.poll_succeeded()
    clock.advance(150.0)
    assert state.ready()[0]
    clock.advance(1.0)
    assert not state.ready()[0]


# --------------------------------------------------------------------------- health server


@pytest.fixture
async def server(state: HealthState) -> AsyncIterator[HealthServer]:
    health_server = HealthServer("127.0.0.1", 0, health=state)
    await health_server.start()
    yield health_server
    await health_server.stop()


@pytest.fixture
async def client(server: HealthServer) -> AsyncIterator[httpx.AsyncClient]:
    base_url = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as http:
        yield http


def test_port_is_unknown_before_start(state: HealthState) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = HealthServer("127.0.0.1", 0, health=state).port


async def test_metrics_serves_the_poller_registry(client: httpx.AsyncClient) -> None:
    sample = {"outcome": "success"}
    before = metrics.REGISTRY.get_sample_value("poller_polls_total", sample) or 0.0
    metrics.POLLS.labels(outcome="success").inc()

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
    assert f'poller_polls_total{{outcome="success"}} {before + 1.0}' in response.text
    assert "poller_outbox_oldest_age_seconds" in response.text


async def test_healthz_is_ok_with_a_recent_heartbeat(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_healthz_is_503_when_the_heartbeat_is_stale(
    client: httpx.AsyncClient, state: HealthState, clock: FakeClock
) -> None:
    clock.advance(61.0)
    stale = await client.get("/healthz")
    state.heartbeat()
    recovered = await client.get("/healthz")

    assert stale.status_code == 503
    assert stale.json()["status"] == "stale"
    assert recovered.status_code == 200


async def test_readyz_is_503_starting_before_the_first_successful_poll(
    client: httpx.AsyncClient, state: HealthState
) -> None:
    state.poll_failed()
    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "starting"
    assert response.json()["failed"] == ["poll"]


async def test_readyz_is_ok_after_a_successful_poll(
    client: httpx.AsyncClient, state: HealthState
) -> None:
    state.poll_succeeded()
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["failed"] == []


async def test_readyz_is_503_naming_the_outbox_when_it_is_stuck(
    client: httpx.AsyncClient, state: HealthState, clock: FakeClock
) -> None:
    state.poll_succeeded()
    state.set_outbox_oldest(clock.time() - 2 * 3600.0)
    response = await client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["outbox"]
    assert body["checks"]["outbox"]["oldest_pending_age_seconds"] == 7200.0


async def test_readyz_is_503_naming_the_poll_when_polls_stopped_succeeding(
    client: httpx.AsyncClient, state: HealthState, clock: FakeClock
) -> None:
    state.poll_succeeded()
    clock.advance(151.0)
    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failed"] == ["poll"]


@pytest.mark.parametrize("path", ["/", "/health", "/metrics/extra", "/readyz/"])
async def test_unknown_path_is_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 404


async def test_stop_releases_the_port(state: HealthState) -> None:
    health_server = HealthServer("127.0.0.1", 0, health=state)
    await health_server.start()
    port = health_server.port
    await health_server.stop()

    async with httpx.AsyncClient(trust_env=False) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/healthz")


async def test_start_twice_is_refused(server: HealthServer) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        await server.start()
