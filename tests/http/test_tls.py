"""CA stores: none loaded before an https connection needs one, one shared, and still verified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from poller.http.tls import client_context
from poller.http.transport import pooled_transport
from tests.smtp_server import self_signed

LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=1)

# Counts every CA store load of a fresh interpreter: the system store's and a bundle's.
COUNTING = """
import json, ssl, sys
loads = []
for name in ("set_default_verify_paths", "load_verify_locations"):
    real = getattr(ssl.SSLContext, name)
    def counting(self, *args, _real=real, _name=name, **kwargs):
        loads.append(_name)
        return _real(self, *args, **kwargs)
    setattr(ssl.SSLContext, name, counting)
def said(**more):
    print(json.dumps({"loads": loads, **more}), flush=True)
"""

# A TLS server on 127.0.0.1 (the certificate in argv[1]), and aiohttp's own default client.
DEFAULT_CLIENT = """
import asyncio, ssl, aiohttp
from aiohttp import web
from poller.http.tls import is_deferred
import aiohttp.connector as connector

async def main():
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(sys.argv[1], sys.argv[2])
    app = web.Application()
    app.router.add_get("/", lambda request: web.Response(text="hello"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    deferred = is_deferred(connector._SSL_CONTEXT_VERIFIED)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/") as answer:
                outcome = await answer.text()
    except aiohttp.ClientConnectorCertificateError:
        outcome = "certificate refused"
    await runner.cleanup()
    said(deferred_before=deferred, outcome=outcome,
         deferred_after=is_deferred(connector._SSL_CONTEXT_VERIFIED))

asyncio.run(main())
"""


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", COUNTING + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    said: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return said


def test_once_and_its_http_clients_load_no_ca_store() -> None:
    said = _run(
        """
        import httpx, poller.once
        from poller.http.transport import pooled_transport
        pooled_transport(httpx.Limits(max_connections=2), verify=False)
        said()
        """
    )
    assert said["loads"] == []


def test_every_https_client_shares_one_bundle_load() -> None:
    said = _run(
        """
        import httpx
        from poller.http.transport import pooled_transport
        limits = httpx.Limits(max_connections=2)
        first, second = pooled_transport(limits), pooled_transport(limits)
        said(shared=first.ssl_context is second.ssl_context)
        """
    )
    assert said == {"loads": ["load_verify_locations"], "shared": True}


def test_a_verifying_transport_uses_the_process_context() -> None:
    secure = pooled_transport(LIMITS)
    assert secure.ssl_context is client_context()  # type: ignore[attr-defined]
    assert client_context().check_hostname and client_context().cert_store_stats()["x509_ca"] > 0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


def test_aiohttps_deferred_default_context_still_refuses_an_unknown_certificate(
    certificate: tuple[Path, Path],
) -> None:
    said = _run("import poller\n" + DEFAULT_CLIENT, *map(str, certificate))
    assert said["deferred_before"] is True and said["deferred_after"] is False
    assert said["outcome"] == "certificate refused"
    assert said["loads"] == ["set_default_verify_paths"]  # at the handshake, once


def test_aiohttps_deferred_default_context_loads_the_store_the_environment_names(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    said = _run(
        "import poller\n" + DEFAULT_CLIENT, str(cert), str(key), env={"SSL_CERT_FILE": str(cert)}
    )
    assert said["outcome"] == "hello" and said["deferred_before"] is True
