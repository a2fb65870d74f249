"""TLS contexts: a CA store is loaded once per process, and only where a connection needs it.

Loading a CA store costs about 230 M instructions (some 30 ms of CPU here). Left alone, a
``poller once`` paid for two before its first request, even to an ``http://`` URL: aiohttp's
connector builds its two default contexts (for ``ssl=True``) at import, each loading the
system store. httpx loads certifi's bundle for every client made with ``verify=True``: one
more per https sink.

- :func:`client_context` is the process's one verifying client context (certifi's bundle, or
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` as httpx reads them), made for the first https client
  and shared by the rest;
- :func:`defer_aiohttp_ca_loads` (run by ``poller/__init__.py``, so that no import order can
  miss it) makes aiohttp's two default contexts load the system store at their first
  handshake instead. The poller never uses them (its transport always passes its own
  context), but any aiohttp client of the process that does still verifies as before.
"""

from __future__ import annotations

import functools
import importlib.machinery
import ssl
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from importlib.abc import Loader  # importing it costs 7 ms (importlib.resources)

# The module whose code builds aiohttp's default contexts (aiohttp 3.10 and later).
AIOHTTP_CONNECTOR = "aiohttp.connector"
_arming = threading.Lock()


@functools.cache
def client_context() -> ssl.SSLContext:
    """The one verifying client context of the process, made at its first call."""
    import httpx  # only a process with an https URL pays for the bundle

    return httpx.create_ssl_context(verify=True)


def defer_aiohttp_ca_loads() -> None:
    """From now on, run ``aiohttp.connector``'s import with its CA store loads deferred."""
    if AIOHTTP_CONNECTOR in sys.modules or any(
        isinstance(finder, _DeferringFinder) for finder in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, _DeferringFinder())


def is_deferred(context: ssl.SSLContext) -> bool:
    """Whether ``context`` has not loaded its CA store yet (it will at its first handshake)."""
    return "wrap_bio" in vars(context)


class _DeferringFinder:
    """Finds ``aiohttp.connector`` as the path finder does, and defers the loads of its code."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != AIOHTTP_CONNECTOR:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = cast("Loader", _DeferringLoader(spec.loader))
        return spec


class _DeferringLoader:
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        with _loads_deferred():
            self._loader.exec_module(module)


@contextmanager
def _loads_deferred() -> Iterator[None]:
    """While inside, a context asking for the default store gets it at its first handshake."""
    own = vars(ssl.SSLContext).get("set_default_verify_paths")  # None: _ssl._SSLContext's
    ssl.SSLContext.set_default_verify_paths = _arm  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        if own is None:
            del ssl.SSLContext.set_default_verify_paths
        else:
            ssl.SSLContext.set_default_verify_paths = own  # type: ignore[method-assign]


def _arm(context: ssl.SSLContext) -> None:
    """Stand in for ``set_default_verify_paths``: load the store when ``context`` first wraps."""

    def loading_first(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            _load_now(context)
            return getattr(context, name)(*args, **kwargs)

        return call

    # asyncio's TLS wraps a BIO; a blocking socket is wrapped by wrap_socket.
    context.wrap_bio = loading_first("wrap_bio")  # type: ignore[method-assign]
    context.wrap_socket = loading_first("wrap_socket")  # type: ignore[method-assign]


def _load_now(context: ssl.SSLContext) -> None:
    with _arming:
        if is_deferred(context):
            del context.wrap_bio, context.wrap_socket
            type(context).set_default_verify_paths(context)
