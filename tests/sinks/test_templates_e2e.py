"""Issue 11, item 4, with real processes: a template can neither eat the memory of
`poller check-config` nor stop `poller run` (polls, /healthz, other sinks, SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from poller.lab.simulator import SimulatorThread
from poller.sinks.templates import RENDER_SECONDS
from tests.fake_slack import FakeSlack, fake_slack_in_thread
from tests.support import (
    ROOT,
    DaemonProcess,
    free_port,
    poller_cmd,
    run_measured,
    run_poller,
    seeded_simulator,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

BOMB = "{{ 'x' * 10**9 }}"
NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}"
# Three loops of 1,000 with nothing in them: within every size bound, it runs out of work or time.
SLOW = (
    "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}"
    "{% endfor %}{% endfor %}{% endfor %}"
)
TRIGGER = "runaway"  # the sample events of the load-time check do not carry this body


def _check_config_config(folder: Path, template: str) -> Path:
    config = {
        "twilio": {"account_sid": "AC" + "0" * 32, "auth_token": "secret-token"},
        "state": {"path": str(folder / "state.db")},
        "watch": [{"service_sid": "KS" + "0" * 32, "all_sessions": True}],
        "sinks": [
            {"name": "ops", "type": "webhook", "url": "https://example.com/hook"},
            {
                "name": "support",
                "type": "slack",
                "webhook_url": "https://hooks.slack.com/services/T/B/X",
                "template": template,
            },
        ],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("template", "reason", "cpu_seconds"),
    [
        # Generous CPU ceilings (start-up alone is ~1 s on a loaded 2-core machine): the
        # unbounded versions took 17 s and more; the RSS bound is the tight one.
        (BOMB, "too_large", 8.0),
        (NESTED, "range_too_long", 8.0),
        (SLOW, None, 8.0 + RENDER_SECONDS),  # this one works until a bound stops it
    ],
)
def test_check_config_refuses_a_runaway_template_at_once_and_small(
    tmp_path: Path, template: str, reason: str | None, cpu_seconds: float
) -> None:
    """Before: ``{{ 'x' * 10**9 }}`` took 17 s and 3.9 GB, then "config ok"."""
    config = _check_config_config(tmp_path, template)
    env = {k: v for k, v in os.environ.items() if k != "POLLER_CONFIG"}
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr_file:
        run = run_measured(
            poller_cmd("check-config", "-c", str(config)),
            tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            env=env,
            cwd=ROOT,
        )
    assert run.returncode == 2
    [line] = stderr_path.read_text().splitlines()
    assert "sinks[1].template: expected a template that renders" in line
    reasons = [reason] if reason else ["too_many_operations", "too_slow"]  # whichever first
    assert any(f"({why})" in line for why in reasons), line
    assert run.peak_rss_mib < 150  # the interpreter and its imports, nothing more
    assert run.cpu_seconds < cpu_seconds  # CPU time: the load of others aside


# -- the daemon ------------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(14, sessions=1, per_session=1) as running:
        yield running


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack_in_thread() as fake:
        yield fake


def _runaway(body: str) -> str:
    """A template that renders on the sample events and runs away on a real one."""
    return f"{{% if body == '{TRIGGER}' %}}{body}{{% endif %}}*{{{{ title }}}}*"


class _HealthProbe(threading.Thread):
    """Asks /healthz over and over, recording every answer (None: no answer within 5 s)."""

    def __init__(self, port: int) -> None:
        super().__init__(name="healthz-probe", daemon=True)
        self.port = port
        self.answers: list[int | None] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.done.wait(0.02):
                try:
                    status: int | None = client.get(
                        f"http://127.0.0.1:{self.port}/healthz"
                    ).status_code
                except httpx.HTTPError:
                    status = None
                self.answers.append(status)


def test_runaway_templates_fall_back_while_the_daemon_stays_responsive(
    sim: SimulatorThread, slack: FakeSlack, tmp_path: Path
) -> None:
    port = free_port()
    slow_url = slack.add_webhook("slow")
    sinks = [
        {
            "name": "nested",
            "type": "slack",
            "webhook_url": slack.webhook_url,
            "template": _runaway(NESTED),
        },
        {"name": "slow", "type": "slack", "webhook_url": slow_url, "template": _runaway(SLOW)},
    ]
    config = write_config(
        tmp_path, sim, "http://127.0.0.1:9", sinks=sinks, http={"listen": f"127.0.0.1:{port}"}
    )
    daemon = DaemonProcess(config, tmp_path).start()
    probe = _HealthProbe(port)
    try:
        wait_for(lambda: _baselined(daemon), what="the first poll")
        probe.start()
        s = sim.simulator
        service = s.service_sids()[0]
        [session] = s.session_sids(service)
        s.add_interaction(service, session, body=TRIGGER)
        wait_for(lambda: len(slack.accepted) >= 2, timeout=60, what="both sinks to deliver")
        answered_while_rendering = len(probe.answers)
        probe.done.set()
        probe.join(10)
        # Another one, and SIGTERM as soon as it is detected: while its templates render.
        s.add_interaction(service, session, body=TRIGGER)
        wait_for(lambda: _count(daemon, "session_changed") == 2, what="the second event")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
        # Whatever the stop left pending is delivered after a restart, not frozen on.
        daemon.start()
        wait_for(lambda: len(slack.accepted) >= 4, timeout=60, what="the second event")
        wait_for(lambda: _healthy(port), what="the restarted daemon to answer /healthz")
        assert daemon.stop() == 0
    finally:
        probe.done.set()
        daemon.kill()

    for post in slack.accepted:  # the default message: its fallback text and its header
        assert post.payload["text"].startswith("New message in session ")
        assert post.payload["blocks"][0]["type"] == "header"
    assert len(slack.accepted) == 4
    failed = [(e["sink"], e["reason"]) for e in _all_events(tmp_path, "template_failed")]
    assert failed.count(("nested", "range_too_long")) == 2
    assert {reason for sink, reason in failed if sink == "slow"} <= {
        "too_many_operations",
        "too_slow",
    }
    assert answered_while_rendering > 0 and set(probe.answers) == {200}
    outbox = json.loads(run_poller("state", "show", "-c", str(config)).stdout)["outbox"]
    assert not any(outbox["pending"].values())  # nothing left to freeze a restart on


def _all_events(folder: Path, event: str) -> list[dict[str, object]]:
    """The ``event`` lines of every start of the daemon, in order."""
    found = []
    for log in sorted(folder.glob("daemon-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and item.get("event") == event:
                found.append(item)
    return found


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _baselined(daemon: DaemonProcess) -> bool:
    """The watch's first baseline is done (``session_baselined`` is a debug line)."""
    return any(
        item.get("event") == "baseline_progress" and item.get("left") == 0
        for item in daemon.log_events()
    )


def _logged(daemon: DaemonProcess, event: str) -> bool:
    return _count(daemon, event) > 0


def _count(daemon: DaemonProcess, event: str) -> int:
    return sum(1 for item in daemon.log_events() if item.get("event") == event)


def test_sighup_with_a_bomb_template_is_rejected_and_the_daemon_carries_on(
    sim: SimulatorThread, slack: FakeSlack, tmp_path: Path
) -> None:
    """Before: a reload evaluated ``{{ 'x' * 10**9 }}`` inside the daemon (17 s, 3.9 GB)."""
    port = free_port()
    sink = {"name": "support", "type": "slack", "webhook_url": slack.webhook_url}
    http = {"listen": f"127.0.0.1:{port}"}
    config = write_config(tmp_path, sim, "http://127.0.0.1:9", sinks=[sink], http=http)
    daemon = DaemonProcess(config, tmp_path).start()
    try:
        wait_for(lambda: _baselined(daemon), what="the first poll")
        write_config(
            tmp_path, sim, "http://127.0.0.1:9", sinks=[{**sink, "template": BOMB}], http=http
        )
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: _logged(daemon, "reload_rejected"), what="the reload to be rejected")
        [rejected] = [e for e in daemon.log_events() if e.get("event") == "reload_rejected"]
        assert "sinks[0].template" in str(rejected["error"])
        assert "(too_large)" in str(rejected["error"])
        assert _healthy(port)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
