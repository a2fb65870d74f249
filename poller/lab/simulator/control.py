"""The control API under ``/_sim/``: drive a simulator in another process over JSON.

It mirrors the Python API of ``Simulator``; it needs no auth (the server is loopback-only).
Errors answer ``{"error": "..."}`` with 400 (bad argument) or 404 (unknown resource).

| method and path | does |
| --- | --- |
| GET /_sim/info | account SID, base URL, services and their sessions |
| GET /_sim/stats | request counters by path kind and status, model sizes |
| GET /_sim/changes?since=N | the change log from index N (`next` is the index to ask next) |
| POST /_sim/services | add a Service (`friendly_name`) |
| POST /_sim/seed | `sessions`, `interactions_per_session`, `service_sid`, `history_seconds` |
| POST /_sim/services/{ks}/sessions | add a session (`unique_name`, `mode`, `ttl`) |
| POST /_sim/services/{ks}/sessions/{kc}/interactions | add an interaction (`type`, `body`, ...) |
| POST /_sim/sessions/{kc}/status | `status`, `reason` |
| POST /_sim/sessions/{kc}/close | `reason` |
| DELETE /_sim/sessions/{kc} | delete a session |
| POST /_sim/interactions/{ki}/status | `inbound`, `outbound` |
| POST /_sim/interactions/{ki}/advance | one step along its progression (`null` when settled) |
| DELETE /_sim/interactions/{ki} | delete an interaction |
| POST /_sim/faults/fail_next | `n`, `status`, `malformed`, `delay` |
| POST /_sim/faults/rates | `error_5xx`, `rate_429`, `malformed`, `slow`, `slow_seconds`, ... |
| POST /_sim/faults/clear | no more faults |
| POST /_sim/settings | any of `retry_after`, `shuffle`, `rate_limit` + `burst` |
| POST /_sim/clock/advance | `seconds`: move the simulated clock forward |
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from poller.lab.simulator.core import Simulator
from poller.lab.simulator.server import SIMULATOR_KEY
from poller.lab.simulator.store import SimulatorError, UnknownResourceError

ControlHandler = Callable[[Simulator, dict[str, Any], web.Request], object]

_ADD_INTERACTION_KEYS = (
    "type",
    "body",
    "inbound_status",
    "outbound_status",
    "duration",
    "at",
)


def _control(
    handler: ControlHandler,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap a handler: parse the JSON body, map errors, answer its result as JSON."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        try:
            result = handler(request.app[SIMULATOR_KEY], body, request)
        except UnknownResourceError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except (SimulatorError, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)

    return wrapped


def _info(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return {
        "account_sid": sim.account_sid,
        "base_url": sim.base_url,
        "services": {ks: sim.session_sids(ks) for ks in sim.service_sids()},
    }


def _stats(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return sim.stats()


def _changes(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    since = int(request.query.get("since", "0"))
    if since < 0:
        raise ValueError("since: expected an integer >= 0")
    entries = []
    for change in sim.change_log(since):
        service_sid, session_sid = sim.owner(change.interaction_sid)
        entries.append(
            {
                "interaction_sid": change.interaction_sid,
                "service_sid": service_sid,
                "session_sid": session_sid,
                **change.fingerprint._asdict(),
            }
        )
    return {"changes": entries, "next": since + len(entries)}


def _add_service(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return sim.add_service(**body)


def _seed(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    service_sid, sessions = sim.seed_data(**body)
    return {"service_sid": service_sid, "sessions": sessions}


def _add_session(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return sim.add_session(request.match_info["service"], **body)


def _add_interaction(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    unknown = set(body) - set(_ADD_INTERACTION_KEYS)
    if unknown:
        raise ValueError(f"unknown keys: {sorted(unknown)}")
    info = request.match_info
    return sim.add_interaction(info["service"], info["session"], **body)


def _session_status(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return sim.set_session_status(request.match_info["session"], **body)


def _close_session(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return sim.close_session(request.match_info["session"], **body)


def _delete_session(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    sim.delete_session(request.match_info["session"])
    return {"deleted": request.match_info["session"]}


def _set_status(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return sim.set_status(request.match_info["sid"], **body)


def _advance(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return sim.advance(request.match_info["sid"])


def _delete_interaction(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    sim.delete_interaction(request.match_info["sid"])
    return {"deleted": request.match_info["sid"]}


def _fail_next(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    sim.fail_next(**body)
    return {"queued": sim.faults.queued}


def _fault_rates(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return dataclasses.asdict(sim.fault_rates(**body))


def _clear_faults(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    sim.clear_faults()
    return {"cleared": True}


def _settings(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    unknown = set(body) - {"retry_after", "shuffle", "rate_limit", "burst"}
    if unknown:
        raise ValueError(f"unknown keys: {sorted(unknown)}")
    if "retry_after" in body:
        sim.retry_after = None if body["retry_after"] is None else float(body["retry_after"])
    if "shuffle" in body:
        sim.shuffle = bool(body["shuffle"])
    if "rate_limit" in body or "burst" in body:
        sim.set_rate_limit(
            body.get("rate_limit", sim.limiter.rate), body.get("burst", sim.limiter.capacity)
        )
    return {
        "retry_after": sim.retry_after,
        "shuffle": sim.shuffle,
        "rate_limit": sim.limiter.rate,
        "burst": sim.limiter.capacity,
    }


def _advance_clock(sim: Simulator, body: dict[str, Any], request: web.Request) -> object:
    return {"now": sim.advance_clock(int(body.get("seconds", 0)))}


def add_control_routes(app: web.Application) -> None:
    routes: list[tuple[str, str, ControlHandler]] = [
        ("GET", "/_sim/info", _info),
        ("GET", "/_sim/stats", _stats),
        ("GET", "/_sim/changes", _changes),
        ("POST", "/_sim/services", _add_service),
        ("POST", "/_sim/seed", _seed),
        ("POST", "/_sim/services/{service}/sessions", _add_session),
        ("POST", "/_sim/services/{service}/sessions/{session}/interactions", _add_interaction),
        ("POST", "/_sim/sessions/{session}/status", _session_status),
        ("POST", "/_sim/sessions/{session}/close", _close_session),
        ("DELETE", "/_sim/sessions/{session}", _delete_session),
        ("POST", "/_sim/interactions/{sid}/status", _set_status),
        ("POST", "/_sim/interactions/{sid}/advance", _advance),
        ("DELETE", "/_sim/interactions/{sid}", _delete_interaction),
        ("POST", "/_sim/faults/fail_next", _fail_next),
        ("POST", "/_sim/faults/rates", _fault_rates),
        ("POST", "/_sim/faults/clear", _clear_faults),
        ("POST", "/_sim/settings", _settings),
        ("POST", "/_sim/clock/advance", _advance_clock),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, _control(handler))
