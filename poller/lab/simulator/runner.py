"""Run the simulator: in the current loop, in a background thread, or as ``poller simulate``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TextIO, TypeVar

from aiohttp import web

from poller.lab.simulator.control import add_control_routes
from poller.lab.simulator.core import Simulator
from poller.lab.simulator.server import SIMULATOR_KEY, add_twilio_routes, twilio_api
from poller.lab.simulator.traffic import run_traffic

T = TypeVar("T")

_START_TIMEOUT_SECONDS = 10.0


def build_app(simulator: Simulator) -> web.Application:
    """The aiohttp application: Twilio's endpoints under ``/v1/``, the control API under
    ``/_sim/``."""
    app = web.Application(middlewares=[twilio_api])
    app[SIMULATOR_KEY] = simulator
    add_twilio_routes(app)
    add_control_routes(app)
    return app


class RunningSimulator:
    """A simulator serving HTTP in the current event loop."""

    def __init__(self, simulator: Simulator, base_url: str, runner: web.AppRunner) -> None:
        self.simulator = simulator
        self.base_url = base_url
        self._runner = runner

    @property
    def credentials(self) -> tuple[str, str]:
        """(account SID, auth token): the HTTP Basic pair the API accepts."""
        return self.simulator.account_sid, self.simulator.auth_token

    async def run_traffic(
        self,
        rate_per_second: float,
        sessions: Sequence[str] | None = None,
        status_progression: bool = True,
        stop: asyncio.Event | None = None,
        **options: Any,
    ) -> int:
        """See ``poller.lab.simulator.traffic.run_traffic``."""
        return await run_traffic(
            self.simulator, rate_per_second, sessions, status_progression, stop, **options
        )

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulator: Simulator | None = None,
    **options: Any,
) -> RunningSimulator:
    """Serve ``simulator`` (or a new ``Simulator(**options)``) on ``host:port`` (0: any free)."""
    simulator = simulator or Simulator(**options)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    runner = web.AppRunner(build_app(simulator), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    bound = sock.getsockname()[1]
    netloc = f"[{host}]" if family == socket.AF_INET6 else host
    simulator.base_url = f"http://{netloc}:{bound}"
    return RunningSimulator(simulator, simulator.base_url, runner)


class SimulatorThread:
    """The simulator in a background thread with its own event loop, for sync tests.

    ``with SimulatorThread(seed=1) as sim: sim.simulator.add_service(); sim.base_url``
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        simulator: Simulator | None = None,
        **options: Any,
    ) -> None:
        self.simulator = simulator or Simulator(**options)
        self.base_url = ""
        self._host, self._port = host, port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            running = await start_simulator(self._host, self._port, simulator=self.simulator)
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self.base_url = running.base_url
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await running.stop()

    def start(self) -> SimulatorThread:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_SECONDS):
            raise RuntimeError("the simulator did not start within 10 seconds")
        if self._error is not None:
            raise self._error
        return self

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine (e.g. ``run_traffic``) on the simulator's loop."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the simulator thread is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(_START_TIMEOUT_SECONDS)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _serve(
    simulator: Simulator,
    host: str,
    port: int,
    on_ready: Callable[[RunningSimulator], None],
    traffic_rate: float,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    running = await start_simulator(host, port, simulator=simulator)
    try:
        on_ready(running)
        traffic = None
        if traffic_rate > 0:
            traffic = asyncio.create_task(running.run_traffic(traffic_rate, stop=stop))
        await stop.wait()
        if traffic is not None:
            await traffic
    finally:
        await running.stop()
        for signum in handled:
            loop.remove_signal_handler(signum)


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulator: Simulator | None = None,
    on_ready: Callable[[RunningSimulator], None] | None = None,
    traffic_rate: float = 0.0,
    **options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM (blocking); ``on_ready`` is called once it listens."""
    simulator = simulator or Simulator(**options)
    asyncio.run(_serve(simulator, host, port, on_ready or (lambda _: None), traffic_rate))


def main_simulate(
    port: int,
    host: str = "127.0.0.1",
    seed_sessions: int = 3,
    *,
    interactions_per_session: int = 3,
    traffic_rate: float = 0.0,
    seed: int | None = None,
    account_sid: str | None = None,
    auth_token: str | None = None,
    rate_limit: float | None = 30.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``poller simulate``: seed a Service and sessions, print how to reach them, serve.

    Returns the exit code: 0 after SIGINT/SIGTERM, 1 when the address cannot be bound.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    simulator = Simulator(
        seed=seed, account_sid=account_sid, auth_token=auth_token, rate_limit=rate_limit
    )
    service_sid, sessions = simulator.seed_data(seed_sessions, interactions_per_session)

    def announce(running: RunningSimulator) -> None:
        print(
            f"simulator listening on {running.base_url} account_sid={simulator.account_sid} "
            f"auth_token={simulator.auth_token} service_sid={service_sid} "
            f"sessions={','.join(sessions)}",
            file=out,
            flush=True,
        )

    try:
        serve(host, port, simulator=simulator, on_ready=announce, traffic_rate=traffic_rate)
    except OSError as exc:
        print(f"poller simulate: cannot listen on {host}:{port}: {exc.strerror}", file=err)
        return 1
    return 0
