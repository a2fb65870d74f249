"""A misbehaving host under the real `poller run`: clock steps, a vanished state, a full disk.

The clock is stepped with libfaketime (Debian's ``faketime``) in the daemon's process only,
its monotonic clock left real; the full disk is a small tmpfs. Each skips with its reason where
the tool is missing or mounting is not permitted, and fails instead in CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from poller.lab.receiver import ReceiverState, ReceiverThread
from poller.lab.simulator import SimulatorThread
from tests.support import DaemonProcess, free_port, run_poller, seeded_simulator, wait_for
from tests.support import write_config as _write_config

pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI") == "true"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason}; CI must run this test")
    pytest.skip(reason)


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(23, sessions=1, per_session=1) as running:
        yield running


@pytest.fixture
def plain_receiver() -> Iterator[ReceiverThread]:
    """A receiver that checks no signature: a faked clock makes ``webhook-timestamp`` old."""
    with ReceiverThread(ReceiverState(secret=None)) as running:
        yield running


def _config(folder: Path, sim: SimulatorThread, receiver: ReceiverThread, **sections: Any) -> Path:
    sink = {"name": "ops", "type": "webhook", "url": f"{receiver.base_url}/hooks/ops"}
    return _write_config(folder, sim, receiver.base_url, sinks=[sink], **sections)


def _get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
    except httpx.TransportError:
        return None


def _status(port: int, path: str) -> int | None:
    response = _get(port, path)
    return None if response is None else response.status_code


def _events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == name]


def _add_interaction(sim: SimulatorThread) -> str:
    s = sim.simulator
    service = s.service_sids()[0]
    return str(s.add_interaction(service, s.session_sids(service)[0], body="host")["sid"])


def _delivered(receiver: ReceiverThread, interaction_sid: str) -> bool:
    return any(r.body["data"]["interaction"]["sid"] == interaction_sid for r in receiver.received())


def _set(receiver: ReceiverThread, **fields: Any) -> None:
    def apply() -> None:
        for key, value in fields.items():
            setattr(receiver.state, key, value)

    receiver.call(apply)


def _attempts(receiver: ReceiverThread) -> int:
    return int(receiver.call(lambda: receiver.state.attempts))


def _start(daemon: DaemonProcess, port: int) -> None:
    daemon.start()
    wait_for(lambda: _status(port, "/readyz") == 200, what="the daemon to be ready")


# -- clock steps -------------------------------------------------------------------------------


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        _unavailable("libfaketime is not installed (apt-get install faketime)")
    return found[0]


def _step_to(rc: Path, offset: str) -> float:
    """Set the daemon's wall clock ``offset`` from the real one; return when (monotonic)."""
    rc.write_text(offset + "\n")
    return time.monotonic()


def _deliver_after(receiver: ReceiverThread, sim: SimulatorThread, since: float) -> float:
    sid = _add_interaction(sim)
    wait_for(lambda: _delivered(receiver, sid), timeout=30, what=f"{sid} delivered")
    return time.monotonic() - since


def test_wall_clock_steps_neither_stall_deliveries_nor_fail_health(
    sim: SimulatorThread, plain_receiver: ReceiverThread, tmp_path: Path
) -> None:
    rc = tmp_path / "faketime.rc"
    rc.write_text("+0\n")
    env = {
        "LD_PRELOAD": _libfaketime(),
        "FAKETIME_TIMESTAMP_FILE": str(rc),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    port = free_port()
    config = _config(tmp_path, sim, plain_receiver, http={"listen": f"127.0.0.1:{port}"})
    daemon = DaemonProcess(config, tmp_path, env=env)
    try:
        _start(daemon, port)
        # A retry stored in wall time, 5 s ahead, when the clock goes back an hour.
        _set(plain_receiver, status=503, retry_after="5")
        waiting = _add_interaction(sim)
        wait_for(lambda: _events(daemon, "delivery_failed"), what="a stored retry")
        stepped = _step_to(rc, "-1h")
        _set(plain_receiver, status=204, retry_after=None)
        wait_for(lambda: _delivered(plain_receiver, waiting), timeout=30, what="the retry")
        retry_delay = time.monotonic() - stepped
        new_delay = _deliver_after(plain_receiver, sim, time.monotonic())
        (back,) = _events(daemon, "clock_stepped")
        assert -3610 < back["step_seconds"] < -3590
        print(
            f"step -1h: the retry due 5 s later delivered {retry_delay:.2f} s after the step; "
            f"then a new interaction {new_delay:.2f} s after it appeared"
        )
        assert retry_delay < 12.0 and new_delay < 12.0

        stepped = _step_to(rc, "+1h")  # two hours forward from there
        deadline = stepped + 3.0
        while time.monotonic() < deadline:  # the window where a wall-clock age would be 2 h
            assert _status(port, "/healthz") == 200
            assert _status(port, "/readyz") == 200
        wait_for(lambda: len(_events(daemon, "clock_stepped")) == 2, what="the forward step")
        assert 7190 < _events(daemon, "clock_stepped")[1]["step_seconds"] < 7210
        forward_delay = _deliver_after(plain_receiver, sim, time.monotonic())
        print(f"step +2h: a new interaction delivered after {forward_delay:.2f} s")
        assert forward_delay < 12.0
        assert daemon.stop() == 0
    finally:
        daemon.kill()


# -- a vanished state --------------------------------------------------------------------------


def test_state_directory_removed_under_the_daemon_is_noticed_and_it_exits(
    sim: SimulatorThread, plain_receiver: ReceiverThread, tmp_path: Path
) -> None:
    port = free_port()
    folder = tmp_path / "var"
    folder.mkdir()
    config = _config(
        tmp_path,
        sim,
        plain_receiver,
        http={"listen": f"127.0.0.1:{port}"},
        state={"path": str(folder / "state.db")},
        delivery={"shutdown_timeout_seconds": 20},
    )
    daemon = DaemonProcess(config, tmp_path)
    entered, release = threading.Event(), threading.Event()

    def hold_the_answer(_item: object) -> None:
        # Keeps one delivery in flight, so the daemon drains (and answers probes) a while.
        entered.set()
        release.wait(30)

    try:
        _start(daemon, port)
        _set(plain_receiver, on_event=hold_the_answer)
        _add_interaction(sim)
        assert entered.wait(30), "no delivery reached the receiver"
        removed = time.monotonic()
        shutil.rmtree(folder)
        wait_for(lambda: _events(daemon, "state_lost"), timeout=10, what="state_lost")
        noticed = time.monotonic() - removed
        assert noticed < 5.0 + 1.0  # within one heartbeat, with a margin
        (lost,) = _events(daemon, "state_lost")
        assert lost["level"] == "error" and "no longer exists" in lost["reason"]
        readyz = _get(port, "/readyz")
        assert readyz is not None and readyz.status_code == 503
        assert "state" in readyz.json()["failed"]
        release.set()
        assert daemon.wait(30) == 1
        assert time.monotonic() - removed < 5.0 + 20.0
    finally:
        release.set()
        daemon.kill()
    again = run_poller("run", "-c", str(config), timeout=30)
    assert again.returncode == 2
    assert len(again.stderr.strip().splitlines()) == 1
    assert "does not exist" in again.stderr and "Traceback" not in again.stderr


# -- a full disk -------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    if shutil.which("mount") is None:
        _unavailable("no mount command")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        _unavailable(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system has no space left."""
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def _pending_gauge(port: int) -> str | None:
    response = _get(port, "/metrics")
    if response is None:
        return None
    lines = [line for line in response.text.splitlines() if line.startswith("poller_outbox_pend")]
    return next((line.split()[-1] for line in lines if 'sink="ops"' in line), None)


def test_full_disk_backs_off_keeps_the_gauge_and_loses_nothing(
    sim: SimulatorThread, plain_receiver: ReceiverThread, tmp_path: Path
) -> None:
    port = free_port()
    with _tmpfs(tmp_path / "disk", "8m") as disk:
        config = _config(
            tmp_path,
            sim,
            plain_receiver,
            http={"listen": f"127.0.0.1:{port}"},
            state={"path": str(disk / "state.db")},
        )
        daemon = DaemonProcess(config, tmp_path)
        try:
            _start(daemon, port)
            _set(plain_receiver, status=503, retry_after="3")
            first = _add_interaction(sim)
            wait_for(lambda: _events(daemon, "delivery_failed"), what="a stored retry")
            _fill(disk / "filler")
            _set(plain_receiver, retry_after="10")
            wait_for(lambda: _attempts(plain_receiver) >= 2, timeout=15, what="the retry")
            wait_for(lambda: _events(daemon, "delivery_loop_failed"), what="delivery_loop_failed")
            assert "disk is full" in _events(daemon, "delivery_loop_failed")[0]["error"]
            held_at = time.monotonic()
            attempts = _attempts(plain_receiver)
            # Today the head was POSTed again every ~5 s; held, it waits its 10 s in memory.
            while time.monotonic() < held_at + 7.0:
                assert _attempts(plain_receiver) == attempts
                assert _pending_gauge(port) == "1.0"
                time.sleep(0.2)  # watching for something that must not happen: no condition
            (disk / "filler").unlink()
            _set(plain_receiver, status=204, retry_after=None)
            wait_for(lambda: _delivered(plain_receiver, first), timeout=30, what="the held one")
            second = _add_interaction(sim)
            wait_for(lambda: _delivered(plain_receiver, second), timeout=30, what="a new one")
            wait_for(lambda: _pending_gauge(port) == "0.0", what="an empty outbox")
            assert daemon.stop() == 0
        finally:
            daemon.kill()
    text = "\n".join(daemon.log_lines())
    assert "Traceback" not in text and "never retrieved" not in text
    assert len(_events(daemon, "delivery_loop_failed")) == 1
