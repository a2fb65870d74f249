"""The daemon's cycle boundary, without processes: one cycle's failure stays in that cycle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from poller.config import StateConfig, parse_config
from poller.daemon import Daemon
from poller.errors import CredentialsError, StateError

SERVICE = "KS" + "1" * 32


def _config() -> Any:
    return parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
            "watch": [{"service_sid": SERVICE, "all_sessions": True}],
            "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        },
        {},
    )


@dataclass
class _Watch:
    service_sid: str = SERVICE


class _FailingCycle:
    def __init__(self, error: Exception) -> None:
        self.watch = _Watch()
        self.error = error

    async def run(self) -> Any:
        raise self.error


async def test_a_cycle_that_fails_on_the_state_is_logged_and_the_daemon_goes_on() -> None:
    daemon = Daemon("unused.yaml", _config())
    with capture_logs() as logs:
        # A stand-in cycle that only raises: the job fails before it needs the App.
        await daemon._cycle_job(_FailingCycle(StateError("disk full")), None)  # type: ignore[arg-type]
    (failed,) = [e for e in logs if e["event"] == "cycle_failed"]
    assert failed["error_type"] == "StateError" and failed["service_sid"] == SERVICE
    assert not daemon.stop.is_set()
    assert daemon._inflight == set()
    assert daemon.health.ready()[1]["checks"]["poll"]["consecutive_failures"] == 1


async def test_rejected_credentials_stop_the_daemon() -> None:
    daemon = Daemon("unused.yaml", _config())
    with capture_logs() as logs:
        await daemon._cycle_job(
            _FailingCycle(CredentialsError("HTTP 401")),  # type: ignore[arg-type]  # raises only
            None,  # type: ignore[arg-type]  # the job fails before it needs the App
        )
    assert daemon.stop.is_set()
    assert [e["event"] for e in logs] == ["credentials_rejected"]


class _BrokenDispatcher:
    async def run_forever(self, stop: object, wake: object) -> None:
        raise RuntimeError("a bug in the delivery loop")


async def test_a_failed_delivery_loop_is_one_line_and_its_exception_is_retrieved(
    tmp_path: Path,
) -> None:
    import asyncio
    import gc

    from poller.app import build_app

    config = _config().model_copy(update={"state": StateConfig(path=tmp_path / "state.db")})
    daemon = Daemon("unused.yaml", config)
    app = build_app(config)
    app.cycles = []  # no polls: this test is about the delivery task alone
    app.dispatcher = _BrokenDispatcher()  # type: ignore[assignment]
    unhandled: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: unhandled.append(ctx))
    try:
        with capture_logs() as logs:
            await daemon._serve(app)
        gc.collect()
    finally:
        await app.aclose()
    (failed,) = [e for e in logs if e["event"] == "delivery_loop_failed"]
    assert failed["error"] == "a bug in the delivery loop"
    assert failed["error_type"] == "RuntimeError"
    assert unhandled == []  # no "Task exception was never retrieved"
