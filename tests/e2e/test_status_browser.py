"""The status page in a real headless browser, against `poller run`, the simulator and receivers.

Three sinks: ``ops`` (a receiver that accepts), ``refused`` (one that answers 400: a permanent
failure, a dead letter) and ``down`` (one that answers 503: the events stay pending). The page
must show each sink's pending count and the dead letter, then update itself after new traffic
without a reload; the test saves a screenshot to docs/images/status-page.png.

Debian's chromium, driven by Playwright (``executable_path``); skipped with its reason where
either is missing, unless ``POLLER_TEST_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from poller.lab.receiver import ReceiverState, ReceiverThread
from poller.lab.simulator import SimulatorThread
from tests.support import (
    ROOT,
    SECRET,
    DaemonProcess,
    free_port,
    seeded_simulator,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "images" / "status-page.png"
# Without the background-networking flags chromium keeps calling home on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture
def credentials(request: pytest.FixtureRequest) -> dict[str, str] | None:
    """The HTTP credentials the browser answers a 401 with (indirect parameter; None: none)."""
    given: dict[str, str] | None = getattr(request, "param", None)
    return given


@pytest.fixture
def browser_page(tmp_path: Path, credentials: dict[str, str] | None) -> Iterator[Any]:
    """A page of a fresh headless chromium (its own user data dir)."""
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("POLLER_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"POLLER_TEST_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1100, "height": 900},
            http_credentials=credentials,  # type: ignore[arg-type]
        )
        try:
            yield context.new_page()
        finally:
            context.close()


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(19, sessions=2, per_session=2) as running:
        yield running


def _sink(name: str, receiver: ReceiverThread) -> dict[str, Any]:
    return {
        "name": name,
        "type": "webhook",
        "url": f"{receiver.base_url}/hooks/{name}",
        "secret": SECRET,
        "timeout_seconds": 5,
    }


def _cell(page: Any, sink: str, field: str) -> str:
    return str(page.inner_text(f'tr[data-sink="{sink}"] td[data-field="{field}"]'))


def _wait_cell(page: Any, sink: str, field: str, value: str) -> None:
    """Wait (on the DOM, polled by the browser) until the sink's cell reads ``value``."""
    page.wait_for_function(
        "([sink, field, value]) => {"
        "  const cell = document.querySelector("
        '    `tr[data-sink="${sink}"] td[data-field="${field}"]`);'
        "  return cell !== null && cell.textContent.trim() === value; }",
        arg=[sink, field, value],
        timeout=30_000,
    )


def test_the_page_shows_pending_and_a_dead_letter_and_updates_itself(
    browser_page: Any, sim: SimulatorThread, tmp_path: Path
) -> None:
    page = browser_page
    s = sim.simulator
    service = s.service_sids()[0]
    session = s.add_session(service)["sid"]
    port = free_port()
    with (
        ReceiverThread(ReceiverState(secret=SECRET)) as ops,
        ReceiverThread(ReceiverState(secret=SECRET, status=400)) as refusing,
        ReceiverThread(ReceiverState(secret=SECRET, status=503)) as down,
    ):
        config = write_config(
            tmp_path,
            sim,
            ops.base_url,
            sinks=[_sink("ops", ops), _sink("refused", refusing), _sink("down", down)],
            http={"listen": f"127.0.0.1:{port}"},
            delivery={"initial_backoff_seconds": 30, "max_backoff_seconds": 60},
        )
        daemon = DaemonProcess(config, tmp_path).start()
        try:
            _wait(lambda: _ready(port), daemon, "the daemon to be ready (baselined)")
            s.add_interaction(service, session, body="first <b>news</b>")
            _wait(lambda: len(ops.received()) == 1, daemon, "ops to receive the first event")
            page.goto(f"http://127.0.0.1:{port}/")
            _wait_cell(page, "refused", "dead", "1")
            _wait_cell(page, "down", "pending", "1")
            _wait_cell(page, "down", "state", "retrying")
            assert _cell(page, "ops", "pending") == "0"
            assert _cell(page, "ops", "dead") == "0"
            # A mark that a reload would wipe: the update must come from the page's own fetch.
            page.evaluate("window.__notReloaded = true")
            s.add_interaction(service, session, body="second")
            _wait_cell(page, "down", "pending", "2")
            _wait_cell(page, "refused", "dead", "2")
            assert page.evaluate("window.__notReloaded === true")
            assert "<b>news</b>" not in page.content()  # a body is never on the page
            page.click('details[data-attempts="refused"] summary')
            refusals = page.inner_text('details[data-attempts="refused"] tbody')
            assert "dead" in refusals and "HTTP 400" in refusals
            assert "503" in _cell(page, "down", "note")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            # On a phone the wide tables scroll inside their own box, not the whole page.
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            assert page.evaluate("document.querySelector('.scroll').scrollWidth > 390")
        finally:
            daemon.stop()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Callable[[], bool], daemon: DaemonProcess, what: str) -> None:
    """Wait for ``condition``; fail at once if the daemon died meanwhile."""

    def alive_and() -> bool:
        daemon.ensure_alive()
        return condition()

    wait_for(alive_and, timeout=30, what=what)


@pytest.mark.parametrize(
    "credentials", [{"username": "ops", "password": "page-password-1"}], indirect=True
)
def test_behind_http_auth_the_page_loads_and_refreshes_itself(
    browser_page: Any, sim: SimulatorThread, tmp_path: Path
) -> None:
    page = browser_page
    port = free_port()
    with ReceiverThread(ReceiverState(secret=SECRET)) as ops:
        config = write_config(
            tmp_path,
            sim,
            ops.base_url,
            http={
                "listen": f"127.0.0.1:{port}",
                "auth": {"username": "ops", "password": "page-password-1"},
            },
        )
        daemon = DaemonProcess(config, tmp_path).start()
        try:
            _wait(lambda: _ready(port), daemon, "the daemon to be ready (baselined)")
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401
            assert page.goto(f"http://127.0.0.1:{port}/").status == 200
            first = page.get_attribute("main", "data-generated-at")
            page.evaluate("window.__notReloaded = true")
            page.wait_for_function(
                "(first) => document.querySelector('main').dataset.generatedAt !== first",
                arg=first,
                timeout=30_000,
            )
            assert page.evaluate("window.__notReloaded === true")
            assert not page.evaluate("document.body.classList.contains('stale')")
        finally:
            daemon.stop()
