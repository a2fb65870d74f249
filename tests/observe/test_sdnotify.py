"""The sd_notify protocol against a real datagram socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from poller.observe.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_notify_sends_datagram_to_notify_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier(path)
    assert notifier.notify("READY=1")
    assert notifier.notify("WATCHDOG=1")
    assert sock.recv(1024) == b"READY=1"
    assert sock.recv(1024) == b"WATCHDOG=1"
    notifier.close()


def test_notify_reaches_abstract_socket() -> None:
    name = f"poller-test-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        notifier = Notifier(f"@{name}")
        assert notifier.notify("STOPPING=1")
        assert sock.recv(1024) == b"STOPPING=1"
        notifier.close()
    finally:
        sock.close()


def test_notify_without_socket_is_a_no_op() -> None:
    notifier = Notifier(None)
    assert notifier.notify("READY=1") is False
    notifier.close()


def test_notify_to_missing_socket_returns_false(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "absent.sock"))
    assert notifier.notify("READY=1") is False
    notifier.close()
