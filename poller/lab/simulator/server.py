"""The simulator's Twilio Proxy v1 read endpoints on aiohttp.web, with auth, limits and faults.

Per API request, in order: HTTP Basic auth (401), the Service's token bucket (429), the fault
knobs (an error status, a delay, a malformed body), then the endpoint (400 for bad paging, 404
for an unknown Service/Session/Interaction). Every answer is counted by path kind and status.

Malformed bodies are served with status 200 so that they reach the client's JSON parsing:
``truncated`` (half of the real JSON), ``html`` (an HTML error page, ``text/html``) and
``missing_meta`` (the real list page without its ``meta`` object).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from poller.lab.simulator.core import Simulator
from poller.lab.simulator.records import PageSlice
from poller.lab.simulator.store import UnknownResourceError

SIMULATOR_KEY = web.AppKey("simulator", Simulator)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ERRORS: dict[int, tuple[int, str]] = {
    400: (20001, "Invalid parameter"),
    401: (20003, "Authenticate"),
    404: (20404, "The requested resource was not found"),
    405: (20004, "Method not allowed"),
    429: (20429, "Too Many Requests"),
    500: (20500, "An internal server error has occurred"),
    503: (20503, "Service Unavailable"),
}
_TOKEN = re.compile(r"^P([AB])(\d+)$")
_HTML_ERROR = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><p>The upstream server is unavailable.</p></body></html>"
)


class ApiError(Exception):
    """An error answer of the Twilio API, rendered as Twilio's JSON error body."""

    def __init__(self, status: int, message: str | None = None) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message


def twilio_error(status: int, message: str | None = None) -> web.Response:
    """Twilio's error body: ``{"code", "message", "more_info", "status"}``."""
    code, default = _ERRORS.get(status, (20500 if status >= 500 else 20001, "Error"))
    body = {
        "code": code,
        "message": message or default,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    response = web.json_response(body, status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return response


def _too_many(simulator: Simulator) -> web.Response:
    response = twilio_error(429)
    if simulator.retry_after is not None:
        response.headers["Retry-After"] = f"{simulator.retry_after:g}"
    return response


def _basic_credentials(header: str | None) -> tuple[bytes, bytes] | None:
    """(username, password) of an ``Authorization: Basic ...`` header; None if there is none."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        return None
    login, colon, password = decoded.partition(b":")
    return (login, password) if colon else None


def _authorized(simulator: Simulator, header: str | None) -> bool:
    credentials = _basic_credentials(header)
    if credentials is None:
        return False
    login, password = credentials
    matched = False
    for user, secret in simulator.credentials:
        # Compare every pair in full so the answer's timing says nothing about the secret.
        same_user = hmac.compare_digest(user.encode(), login)
        same_secret = hmac.compare_digest(secret.encode(), password)
        matched |= same_user and same_secret
    return matched


@web.middleware
async def twilio_api(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth, rate limit, faults and counting around every ``/v1/`` request."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    simulator = request.app[SIMULATOR_KEY]
    route_name = request.match_info.route.name
    response = await _answer(simulator, request, handler)
    simulator.count_request(route_name or "other", response.status)
    return response


async def _answer(
    simulator: Simulator, request: web.Request, handler: Handler
) -> web.StreamResponse:
    if not _authorized(simulator, request.headers.get("Authorization")):
        return twilio_error(401)
    service_sid = request.match_info.get("service")
    if service_sid and not simulator.limiter.take(service_sid):
        return _too_many(simulator)
    fault = simulator.draw_fault()
    if fault.delay:
        await asyncio.sleep(fault.delay)
    if fault.status == 429:
        return _too_many(simulator)
    if fault.status is not None:
        return twilio_error(fault.status)
    try:
        response = await handler(request)
    except ApiError as exc:
        return twilio_error(exc.status, exc.message)
    except UnknownResourceError:
        return twilio_error(404, f"The requested resource {request.path} was not found")
    except web.HTTPException as exc:
        return twilio_error(exc.status)
    if fault.malformed is not None and isinstance(response, web.Response):
        return _malform(response, fault.malformed)
    return response


def _malform(response: web.Response, kind: str) -> web.Response:
    raw = response.body
    if not isinstance(raw, bytes):
        raw = b"{}"
    if kind == "html":
        return web.Response(text=_HTML_ERROR, content_type="text/html")
    if kind == "truncated":
        return web.Response(body=raw[: max(1, len(raw) // 2)], content_type="application/json")
    data = json.loads(raw)
    data.pop("meta", None)
    return web.json_response(data)


@dataclass(frozen=True, slots=True)
class Paging:
    size: int
    page: int
    token: str | None
    older_than: int | None = None
    newer_than: int | None = None


def _paging(request: web.Request) -> Paging:
    query = request.query
    size = _int_param(query.get("PageSize", "50"), "PageSize", 1, 1000)
    page = _int_param(query.get("Page", "0"), "Page", 0, None)
    token = query.get("PageToken") or None
    if token is None:
        return Paging(size, page, None)
    match = _TOKEN.match(token)
    if match is None:
        raise ApiError(400, "Invalid PageToken")
    cursor = int(match.group(2))
    if match.group(1) == "A":
        return Paging(size, page, token, older_than=cursor)
    return Paging(size, page, token, newer_than=cursor)


def _int_param(raw: str, name: str, low: int, high: int | None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"Invalid {name}: expected an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ApiError(400, f"Invalid {name}: expected an integer {bound}")
    return value


def _list_body(
    request: web.Request,
    key: str,
    records: list[dict[str, Any]],
    page: PageSlice[Any],
    paging: Paging,
) -> web.Response:
    # The origin the client asked (as Twilio answers): one simulator may listen on several
    # ports, and a client pins its credentials to the one it was given.
    base = f"{request.url.origin()}{request.path}"

    def url(number: int, token: str | None = None) -> str:
        suffix = f"&PageToken={token}" if token else ""
        return f"{base}?PageSize={paging.size}&Page={number}{suffix}"

    previous = None
    if paging.page > 0:
        before = f"PB{page.newest_seq}" if page.newest_seq is not None else None
        previous = url(paging.page - 1, before)
    following = None
    if page.has_older and page.oldest_seq is not None:
        following = url(paging.page + 1, f"PA{page.oldest_seq}")
    meta = {
        "previous_page_url": previous,
        "next_page_url": following,
        "url": url(paging.page, paging.token),
        "page": paging.page,
        "first_page_url": url(0),
        "page_size": paging.size,
        "key": key,
    }
    return web.json_response({key: records, "meta": meta})


async def list_sessions(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR_KEY]
    paging = _paging(request)
    records, page = simulator.page_sessions(
        request.match_info["service"],
        paging.size,
        offset=paging.page * paging.size,
        older_than=paging.older_than,
        newer_than=paging.newer_than,
    )
    return _list_body(request, "sessions", records, page, paging)


async def list_interactions(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR_KEY]
    paging = _paging(request)
    records, page = simulator.page_interactions(
        request.match_info["service"],
        request.match_info["session"],
        paging.size,
        offset=paging.page * paging.size,
        older_than=paging.older_than,
        newer_than=paging.newer_than,
    )
    return _list_body(request, "interactions", records, page, paging)


async def fetch_session(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR_KEY]
    info = request.match_info
    return web.json_response(simulator.fetch_session(info["service"], info["session"]))


async def fetch_interaction(request: web.Request) -> web.Response:
    simulator = request.app[SIMULATOR_KEY]
    info = request.match_info
    record = simulator.fetch_interaction(info["service"], info["session"], info["sid"])
    return web.json_response(record)


def add_twilio_routes(app: web.Application) -> None:
    sessions = "/v1/Services/{service}/Sessions"
    interactions = sessions + "/{session}/Interactions"
    app.router.add_get(sessions, list_sessions, name="sessions")
    app.router.add_get(sessions + "/{session}", fetch_session, name="session")
    app.router.add_get(interactions, list_interactions, name="interactions")
    app.router.add_get(interactions + "/{sid}", fetch_interaction, name="interaction")
