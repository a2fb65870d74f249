"""examples/receiver.py, run as a user would, against the poller's own WebhookSink."""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from poller.config import Secret, WebhookSinkConfig
from poller.errors import PermanentDeliveryError
from poller.events import EventType
from poller.sinks.webhook import WebhookSink
from tests.sink_contract_cases import MESSAGE_BODY, make_event

RECEIVER = Path(__file__).resolve().parents[2] / "examples" / "receiver.py"
SECRET = "whsec_" + base64.b64encode(b"example-receiver-secret-32bytes!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"not-the-receiver-secret-32bytes!").decode()
START_TIMEOUT = 10.0


@dataclass
class Output:
    stdout: str
    stderr: str

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.stdout.splitlines() if text in line]


@dataclass
class RunningReceiver:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> Output:
        """SIGTERM the receiver and return everything it printed."""
        self.process.send_signal(signal.SIGTERM)
        stdout, stderr = self.process.communicate(timeout=10)
        assert self.process.returncode == 0, stderr
        return Output(stdout, stderr)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"receiver exited with {process.returncode}: {process.communicate()[1]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # between two probes of the port, not a guess at readiness
    pytest.fail(f"receiver did not listen on port {port} within {START_TIMEOUT} s")


@pytest.fixture
def receiver() -> Iterator[RunningReceiver]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(RECEIVER), "--port", str(port), "--secret", SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(process, port)
        yield RunningReceiver(process, f"http://127.0.0.1:{port}/hooks/proxy")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


class TamperingTransport(httpx.AsyncBaseTransport):
    """Forward each request with one byte of its (already signed) body changed."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        tampered = body.replace(b'"type":"message"', b'"type":"messagE"', 1)
        assert tampered != body
        headers = dict(request.headers)
        headers["content-length"] = str(len(tampered))
        forwarded = httpx.Request(request.method, request.url, headers=headers, content=tampered)
        return await self._inner.handle_async_request(forwarded)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _sink(
    url: str,
    *,
    secret: str = SECRET,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> WebhookSink:
    config = WebhookSinkConfig(name="example", type="webhook", url=url, secret=Secret(secret))
    return WebhookSink(config, transport=transport, clock=clock)


async def test_signed_event_is_answered_204_and_printed_without_its_body(
    receiver: RunningReceiver,
) -> None:
    event = make_event()
    sink = _sink(receiver.url)
    try:
        await sink.send(event)  # raises unless the answer was 2xx
    finally:
        await sink.aclose()
    output = receiver.stop()
    (line,) = output.lines_with(event.id)
    assert line.startswith("interaction.created ")
    assert f"interaction={event.interaction_sid}" in line
    assert f"session={event.session_sid}" in line
    assert MESSAGE_BODY not in output.stdout + output.stderr


async def test_updated_event_line_shows_the_changes(receiver: RunningReceiver) -> None:
    event = make_event(event_type=EventType.UPDATED)
    sink = _sink(receiver.url)
    try:
        await sink.send(event)
    finally:
        await sink.aclose()
    (line,) = receiver.stop().lines_with(event.id)
    assert line.startswith("interaction.updated ")
    assert "outbound_resource_status:sent->delivered" in line


async def test_tampered_body_is_answered_401_and_not_printed(receiver: RunningReceiver) -> None:
    event = make_event()
    sink = _sink(receiver.url, transport=TamperingTransport())
    try:
        with pytest.raises(PermanentDeliveryError) as caught:
            await sink.send(event)
    finally:
        await sink.aclose()
    assert caught.value.status == 401
    output = receiver.stop()
    assert output.lines_with(event.id) == []
    assert f"rejected 401: id={event.id}" in output.stderr


async def test_other_secret_is_answered_401(receiver: RunningReceiver) -> None:
    event = make_event()
    sink = _sink(receiver.url, secret=OTHER_SECRET)
    try:
        with pytest.raises(PermanentDeliveryError) as caught:
            await sink.send(event)
    finally:
        await sink.aclose()
    assert caught.value.status == 401
    assert receiver.stop().lines_with(event.id) == []


async def test_timestamp_ten_minutes_old_is_answered_401(receiver: RunningReceiver) -> None:
    event = make_event()
    sink = _sink(receiver.url, clock=lambda: time.time() - 600)
    try:
        with pytest.raises(PermanentDeliveryError) as caught:
            await sink.send(event)
    finally:
        await sink.aclose()
    assert caught.value.status == 401
    output = receiver.stop()
    assert output.lines_with(event.id) == []
    assert "too old" in output.stderr


async def test_unsigned_request_is_answered_401(receiver: RunningReceiver) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            receiver.url, content=b'{"type":"interaction.created"}', headers={"webhook-id": "x"}
        )
    assert response.status_code == 401
    assert receiver.stop().stdout == ""


async def test_same_webhook_id_twice_is_answered_204_and_printed_once(
    receiver: RunningReceiver,
) -> None:
    event = make_event()
    sink = _sink(receiver.url)
    try:
        await sink.send(event)
        await sink.send(event)  # a redelivery: new timestamp and signature, same webhook-id
    finally:
        await sink.aclose()
    output = receiver.stop()
    assert len(output.lines_with(event.id)) == 1
    assert f"duplicate ignored: id={event.id}" in output.stderr
