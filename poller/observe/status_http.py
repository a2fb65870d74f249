"""The status page's routes on the health server: ``/``, ``/api/status`` and their assets.

GET (and HEAD) only: the page is read-only, changes stay in the CLI; any other method is
aiohttp's 405. With ``http.auth`` these routes need HTTP basic auth, compared in constant time;
a refusal is a 401 with ``WWW-Authenticate: Basic realm="poller"``, one ``status_auth_refused``
log event (the reason and the peer, never what was sent) and
``poller_http_auth_refused_total{reason}``. The probes and ``/metrics`` never need it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from importlib import resources

import structlog
from aiohttp import web

from poller.config.http import HttpAuthConfig
from poller.errors import StateError
from poller.observe import metrics
from poller.observe.status import StatusSnapshot, StatusSource
from poller.observe.status_page import render_page

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NO_STORE = {"Cache-Control": "no-store"}
_ASSETS = {"status.css": "text/css", "status.js": "text/javascript"}
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="poller"', **_NO_STORE}


class BasicAuth:
    """Checks a request's ``Authorization`` header against one user name and password."""

    def __init__(self, config: HttpAuthConfig) -> None:
        self._username = config.username.encode()
        self._password = config.password.get_secret_value().encode()

    def refusal(self, request: web.Request) -> str | None:
        """Return why ``request`` is refused (``missing``, ``malformed``, ``wrong``), or None."""
        header = request.headers.get("Authorization")
        if header is None:
            return "missing"
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return "malformed"
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return "malformed"
        username, colon, password = decoded.partition(b":")
        if not colon:
            return "malformed"
        # Both compared, always: how long a refusal takes says nothing about which was wrong.
        user_ok = hmac.compare_digest(username, self._username)
        password_ok = hmac.compare_digest(password, self._password)
        return None if user_ok and password_ok else "wrong"


def add_status_routes(
    app: web.Application, source: StatusSource, auth: HttpAuthConfig | None
) -> None:
    """Serve the page, its JSON and its assets on ``app`` (behind ``auth`` when given)."""
    guard = _guard(BasicAuth(auth)) if auth is not None else _open
    assets = {name: _asset(name) for name in _ASSETS}

    async def page(_request: web.Request) -> web.Response:
        snapshot = await _snapshot(source)
        return web.Response(text=render_page(snapshot), content_type="text/html", headers=_NO_STORE)

    async def api(_request: web.Request) -> web.Response:
        snapshot = await _snapshot(source)
        return web.json_response(snapshot.to_json(), headers=_NO_STORE)

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return web.Response(body=assets[name], content_type=_ASSETS[name], headers=_NO_STORE)

    app.router.add_get("/", guard(page))
    app.router.add_get("/api/status", guard(api))
    app.router.add_get("/static/{name}", guard(static))


async def _snapshot(source: StatusSource) -> StatusSnapshot:
    """Return the snapshot, or raise a one-line 503 when the state cannot be read now."""
    try:
        return await source.snapshot()
    except StateError as exc:
        log.warning("status_unavailable", error=str(exc), error_type=type(exc).__name__)
        raise web.HTTPServiceUnavailable(
            text=f"the state cannot be read now: {exc}\n", headers=_NO_STORE
        ) from exc


def _asset(name: str) -> bytes:
    return resources.files("poller.observe").joinpath("static", name).read_bytes()


def _open(handler: Handler) -> Handler:
    return handler


def _guard(auth: BasicAuth) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            reason = auth.refusal(request)
            if reason is None:
                return await handler(request)
            metrics.HTTP_AUTH_REFUSED.labels(reason=reason).inc()
            # A browser asks without credentials first: "missing" is routine, the rest is not.
            say = log.info if reason == "missing" else log.warning
            say("status_auth_refused", reason=reason, path=request.path, peer=request.remote)
            return web.Response(status=401, text="authentication required\n", headers=_CHALLENGE)

        return guarded

    return wrap
