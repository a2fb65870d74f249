"""The daemon's cycle boundary, without processes: one cycle's failure stays in that cycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from poller.app import build_app
from poller.config import Config, StateConfig, parse_config
from poller.daemon import Daemon
from poller.errors import ConfigError, CredentialsError, StateError
from poller.observe.metrics import REGISTRY
from poller.state.base import StateStore
from poller.state.open import open_store
from poller.state.sqlite.store import SqliteStore
from tests.observe.test_observe import _restore_logging  # noqa: F401 - a fixture

SERVICE = "KS" + "1" * 32


def _config(**sections: Any) -> Any:
    return parse_config(
        {
            "twilio": {"account_sid": "AC" + "a" * 32, "auth_token": "tok-unit"},
            "watch": [{"service_sid": SERVICE, "all_sessions": True}],
            "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
            **sections,
        },
        {},
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with SqliteStore.open(tmp_path / "state.db") as opened:
        yield opened


def _no_reload() -> Config:
    raise ConfigError("this test reloads nothing")


def _daemon(config: Config, store: StateStore) -> Daemon:
    return Daemon(config, store, build=build_app, reload=_no_reload)


@dataclass
class _Watch:
    service_sid: str = SERVICE


class _FailingCycle:
    def __init__(self, error: Exception) -> None:
        self.watch = _Watch()
        self.error = error

    async def run(self) -> Any:
        raise self.error


async def _run_failing_cycle(daemon: Daemon, error: Exception) -> None:
    # A stand-in cycle, and no App: the cycle job reads neither past the failure.
    cycle: Any = _FailingCycle(error)
    await daemon._cycle_job(cycle, cast(Any, None))


async def test_a_cycle_that_fails_on_the_state_is_logged_and_the_daemon_goes_on(
    store: StateStore,
) -> None:
    daemon = _daemon(_config(), store)
    with capture_logs() as logs:
        await _run_failing_cycle(daemon, StateError("disk full"))
    (failed,) = [e for e in logs if e["event"] == "cycle_failed"]
    assert failed["error_type"] == "StateError" and failed["service_sid"] == SERVICE
    assert not daemon.stop.is_set()
    assert daemon._inflight == set()
    assert daemon.health.ready()[1]["checks"]["poll"]["consecutive_failures"] == 1


async def test_rejected_credentials_stop_the_daemon(store: StateStore) -> None:
    daemon = _daemon(_config(), store)
    with capture_logs() as logs:
        await _run_failing_cycle(daemon, CredentialsError("HTTP 401"))
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

    config = _config().model_copy(update={"state": StateConfig(path=tmp_path / "state.db")})
    store = await open_store(config.state)
    daemon = _daemon(config, store)
    app = await build_app(config, store)
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


# -- SIGHUP: the config read again through the function cli gave ------------------------------


def _config_errors() -> float:
    return REGISTRY.get_sample_value("poller_config_errors_total") or 0.0


@pytest.mark.usefixtures("_restore_logging")  # an accepted reload configures logging
def test_a_reload_takes_the_config_its_reload_function_reads(store: StateStore) -> None:
    new = _config(poll={"interval_seconds": 5})
    daemon = Daemon(_config(), store, build=build_app, reload=lambda: new)
    daemon._on_reload()
    assert daemon.config is new
    assert daemon._reload.is_set()  # the parts are built again, from ``new``


def test_a_reload_whose_config_is_invalid_keeps_the_old_one(store: StateStore) -> None:
    old = _config()
    daemon = Daemon(old, store, build=build_app, reload=_no_reload)
    before = _config_errors()
    with capture_logs() as logs:
        daemon._on_reload()
    assert daemon.config is old and not daemon._reload.is_set()
    assert [(e["event"], e["error"]) for e in logs] == [
        ("reload_rejected", "this test reloads nothing")
    ]
    assert _config_errors() == before + 1


def test_a_reload_cannot_move_the_state(store: StateStore, tmp_path: Path) -> None:
    old = _config()
    moved = _config(state={"path": str(tmp_path / "elsewhere.db")})
    daemon = Daemon(old, store, build=build_app, reload=lambda: moved)
    with capture_logs() as logs:
        daemon._on_reload()
    assert daemon.config is old and not daemon._reload.is_set()
    assert [e["error"] for e in logs] == ["state.path cannot change without a restart"]
