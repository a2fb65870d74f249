"""The user agent, HTTP Basic, the pooled transport and the shared client."""

from __future__ import annotations

import gzip
import ssl

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from poller import __version__
from poller.http.body import read_answer
from poller.http.tls import client_context
from poller.http.transport import (
    ACCEPT_ENCODING,
    async_client,
    basic_auth,
    pooled_transport,
    timeout_extensions,
)
from poller.http.wire import WireTransport

LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=1)


@pytest.mark.parametrize(
    ("username", "password"), [("AC123", "tok"), ("hook@ops", "p:ss"), ("ünï", "çødé")]
)
def test_basic_auth_is_what_httpx_sends(username: str, password: str) -> None:
    request = httpx.Request("GET", "https://x.example/")
    flow = httpx.BasicAuth(username, password).auth_flow(request)
    assert basic_auth(username, password) == next(flow).headers["Authorization"]


def test_timeout_extensions_bound_every_socket_operation() -> None:
    assert timeout_extensions(7.5) == {
        "timeout": {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}
    }


async def test_the_pooled_transport_speaks_tls_only_when_asked_with_the_shared_context() -> None:
    secure = pooled_transport(LIMITS)
    plain = pooled_transport(LIMITS, verify=False)
    try:
        assert isinstance(secure, WireTransport) and isinstance(plain, WireTransport)
        assert secure.limits == LIMITS
        assert secure.ssl_context is client_context()
        assert secure.ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert plain.ssl_context is None
    finally:
        await secure.aclose()
        await plain.aclose()


async def test_the_client_sends_our_user_agent_and_encodings_and_follows_no_redirect() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "https://elsewhere.example/"})

    async with async_client(httpx.MockTransport(handler), timeout=3.0, limits=LIMITS) as client:
        response = await client.post("https://x.example/hook", content=b"{}")
    assert response.status_code == 302
    (request,) = seen
    assert request.headers["user-agent"] == f"twilio-proxy-poller/{__version__}"
    assert request.headers["accept-encoding"] == ACCEPT_ENCODING
    assert request.extensions["timeout"] == timeout_extensions(3.0)["timeout"]


async def test_the_client_never_uses_a_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    async with async_client(transport, timeout=3.0, limits=LIMITS) as client:
        assert (await client.get("https://x.example/")).status_code == 204


async def test_the_default_client_talks_to_a_real_server_and_inflates_its_answer() -> None:
    agents: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        agents.append(request.headers["User-Agent"])
        body = gzip.compress(b'{"ok": true}')
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_post("/hook", answer)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        async_client(None, timeout=5.0, limits=LIMITS) as client,
        client.stream("POST", str(server.make_url("/hook")), content=b"{}") as response,
    ):
        got = await read_answer(response, 1024, cut=True)
    assert got.content == b'{"ok": true}'
    assert agents == [f"twilio-proxy-poller/{__version__}"]
