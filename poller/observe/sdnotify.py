"""systemd's notify protocol (``sd_notify``) in plain Python, without libsystemd.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket); each message is
one datagram of ``KEY=VALUE`` lines. ``cli`` reads it and builds the :class:`Notifier`; without
it every call is a no-op, so the same code runs under systemd, in a container and in a terminal.
"""

from __future__ import annotations

import socket

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``... to systemd when it listens."""

    def __init__(self, address: str | None = None) -> None:
        """``address``: the value of ``NOTIFY_SOCKET`` (None or empty: systemd is not listening)."""
        self._address: str | bytes | None = None
        if address:
            # A leading "@" names a socket in the abstract namespace (a leading NUL byte).
            self._address = b"\0" + address[1:].encode() if address.startswith("@") else address
        self._sock: socket.socket | None = None

    def notify(self, message: str) -> bool:
        """Send one message; return whether it was sent. Never raises."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify_failed", message=message.split("=", 1)[0], error=str(exc))
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
