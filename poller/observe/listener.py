"""``http.listen``: start the daemon's one HTTP server (probes, metrics, the status page)."""

from __future__ import annotations

import structlog

from poller.config import Config
from poller.observe.health import HealthServer, HealthState
from poller.observe.status import StatusSource

log = structlog.get_logger(__name__)


async def start_http(
    config: Config, health: HealthState, status: StatusSource
) -> HealthServer | None:
    """Serve ``config.http`` (None: no ``http.listen``); raises ``OSError`` when it is taken."""
    http = config.http
    if http is None:
        return None
    if http.auth is None and not http.loopback:
        # Not an error: a private network or a proxy in front may be the protection.
        log.warning(
            "status_page_unprotected",
            host=http.host,
            reason="http.listen is not a loopback address and http.auth is not set",
        )
    server = HealthServer(http.host, http.port, health=health, status=status, auth=http.auth)
    await server.start()
    log.info("http_listening", host=http.host, port=server.port)
    return server


def listener_key(config: Config) -> tuple[str, str | None, str | None] | None:
    """What of ``config.http`` a running server holds (a change of it needs a restart)."""
    http = config.http
    if http is None:
        return None
    auth = http.auth
    if auth is None:
        return (http.listen, None, None)
    return (http.listen, auth.username, auth.password.get_secret_value())
