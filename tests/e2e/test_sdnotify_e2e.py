"""``poller run`` under systemd: cli hands the daemon ``NOTIFY_SOCKET``, the daemon notifies it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.lab.receiver import ReceiverThread
from poller.lab.simulator import SimulatorThread
from tests.support import DaemonProcess, seeded_simulator, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with seeded_simulator(3, sessions=1, per_session=1) as running:
        yield running


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)  # each recv waits for the daemon's next datagram, at most this long
    yield sock, path
    sock.close()


def _until(sock: socket.socket, message: bytes) -> list[bytes]:
    """Receive datagrams up to and including ``message``; return them all."""
    seen: list[bytes] = []
    while message not in seen:
        seen.append(sock.recv(1024))
    return seen


def test_the_daemon_tells_the_notify_socket_cli_read_ready_then_stopping(
    sim: SimulatorThread,
    receiver: ReceiverThread,
    tmp_path: Path,
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    config = write_config(tmp_path, sim, receiver.base_url)
    daemon = DaemonProcess(config, tmp_path, env={"NOTIFY_SOCKET": path})
    daemon.start()
    try:
        assert _until(sock, b"READY=1")[-1] == b"READY=1"
        daemon.ensure_alive()
        assert daemon.stop() == 0
        assert b"STOPPING=1" in _until(sock, b"STOPPING=1")
    finally:
        daemon.kill()
