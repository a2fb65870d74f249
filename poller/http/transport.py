"""How the poller speaks HTTP: its user agent, HTTP Basic, the pooled transport, the client.

Requests go over :class:`poller.http.wire.WireTransport` unless a transport is injected (tests
pass ``httpx.MockTransport``): httpx's own async transport costs about twice the CPU per request
(bench/bench_transport.py, bench/bench_delivery.py), aiohttp's a third of ``poller once``'s
start-up to import (bench/bench_startup.py). Environment proxies (``HTTPS_PROXY``) are never
used and redirects never followed.
"""

from __future__ import annotations

import base64

import httpx

from poller import __version__
from poller.http.tls import client_context
from poller.http.wire import WireTransport

USER_AGENT = f"twilio-proxy-poller/{__version__}"
# What poller.http.body inflates; asking for nothing else keeps every answer readable.
ACCEPT_ENCODING = "gzip, deflate"


def basic_auth(username: str, password: str) -> str:
    """The HTTP Basic ``Authorization`` value (as httpx.BasicAuth builds it)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def pooled_transport(limits: httpx.Limits, *, verify: bool = True) -> httpx.AsyncBaseTransport:
    """The transport of one client: a pool of ``limits`` connections.

    ``verify=False`` is for a plain-http URL: that transport speaks no TLS at all. A verifying
    one shares the process's one context (:func:`poller.http.tls.client_context`) instead of
    loading a CA bundle of its own.
    """
    return WireTransport(limits, client_context() if verify else None)


def timeout_extensions(seconds: float) -> dict[str, object]:
    """A request's ``extensions`` bounding each socket operation to ``seconds``."""
    return {"timeout": httpx.Timeout(seconds).as_dict()}


def async_client(
    transport: httpx.AsyncBaseTransport | None, *, timeout: float, limits: httpx.Limits
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over ``transport`` (else a pooled one of ``limits``)."""
    return httpx.AsyncClient(
        transport=transport if transport is not None else pooled_transport(limits),
        timeout=timeout,
        follow_redirects=False,
        headers={"user-agent": USER_AGENT, "accept-encoding": ACCEPT_ENCODING},
        trust_env=False,  # environment proxies (HTTPS_PROXY) are never used
    )
