"""Async client for Twilio Proxy's list endpoints.

One pooled HTTP client; HTTP Basic credentials only ever go to the scheme, host and port of
``twilio.base_url``; every page (next pages too) takes a token of its Service's rate limiter;
429, 5xx and transport failures are retried with jittered backoff until a deadline, resuming at
the page that failed. Twilio's JSON becomes typed records here; nothing deeper sees raw pages.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import httpx
import orjson
import structlog
from httpx_aiohttp import AiohttpTransport
from prometheus_client import Counter

from poller import __version__
from poller.backoff import Backoff, parse_http_date, parse_retry_after
from poller.errors import (
    CredentialsError,
    ForeignURLError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from poller.metrics import TWILIO_BAD_RESPONSES, TWILIO_RATE_LIMITED, TWILIO_REQUESTS
from poller.ratelimit import Clock, RateLimiters, Sleep
from poller.records import Interaction, Session

log = structlog.get_logger(__name__)

USER_AGENT = f"twilio-proxy-poller/{__version__}"
MAX_PAGES = 10_000
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_BACKOFF = Backoff(base=0.5, factor=2.0, cap=30.0, jitter="full")

_DEFAULT_PORTS = {"http": 80, "https": 443}
# httpx-aiohttp leaves a few aiohttp exceptions (and asyncio's timeout) untranslated.
_TRANSPORT_ERRORS = (httpx.TransportError, aiohttp.ClientError, TimeoutError)

T = TypeVar("T")


class ClientSettings(Protocol):
    """What the client reads from ``TwilioConfig``."""

    @property
    def base_url(self) -> str: ...
    @property
    def page_size(self) -> int: ...
    @property
    def max_requests_per_second(self) -> float: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def retry_deadline_seconds(self) -> float: ...
    @property
    def credentials(self) -> tuple[str, str]: ...


@dataclass(frozen=True, slots=True)
class _Target:
    """What one listing is about, to name it in errors."""

    service_sid: str
    session_sid: str | None = None

    def not_found(self, code: str) -> str:
        if self.session_sid is None:
            return f"Twilio has no Proxy Service {self.service_sid} (HTTP 404{code})"
        return (
            f"Twilio has no Proxy Session {self.session_sid} in Service {self.service_sid}"
            f" (HTTP 404{code})"
        )


@dataclass(frozen=True, slots=True)
class _Failure:
    """One retryable failure: an HTTP status, or a transport error (status None)."""

    status: int | None
    retry_after: float | None = None
    error: BaseException | None = None

    def describe(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}"
        return type(self.error).__name__


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _segment(sid: str) -> str:
    return quote(sid, safe="")


class ProxyClient:
    """Lists a Proxy Service's Sessions and a Session's Interactions."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        wall_clock: Clock = time.time,
        backoff: Backoff = DEFAULT_BACKOFF,
        max_pages: int = MAX_PAGES,
    ) -> None:
        base = httpx.URL(str(settings.base_url))
        if base.scheme not in _DEFAULT_PORTS or not base.host:
            raise ValueError(f"base_url: expected an http(s) URL with a host, got {base}")
        self._base = base.copy_with(query=None, fragment=None)
        self._origin = _origin(base)
        # Where every first page's URL starts: built as text, parsed once per listing.
        self._root = str(self._base).rstrip("/")
        self._page_size = settings.page_size
        self._timeout = settings.timeout_seconds
        self._deadline = settings.retry_deadline_seconds
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._backoff = backoff
        self._max_pages = max_pages
        rate = settings.max_requests_per_second
        self._limiters = RateLimiters(rate, max(1.0, rate), clock=clock, sleep=sleep)
        concurrency = max(1, settings.max_concurrency)
        self._semaphore = asyncio.Semaphore(concurrency)
        if transport is None:
            # Measured by bench/bench_transport.py: httpx over aiohttp costs well under half the
            # CPU of httpx's own async transport for the same pages.
            limits = httpx.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            )
            # The transport builds its SSL context at once (loading the CA bundle costs tens of
            # milliseconds): an http:// base_url never speaks TLS (_pin keeps the scheme).
            transport = AiohttpTransport(limits=limits, verify=base.scheme == "https")
        # Requests go straight to the transport: every request is one GET to base_url's origin,
        # so AsyncClient's per-request work (merging, the auth flow, redirects, the cookie jar)
        # would only cost CPU (about a tenth of a full scan's, by bench/bench_fullscan.py).
        self._transport = transport
        self._headers = httpx.Headers(
            {
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",
                "Authorization": _basic_auth(*settings.credentials),
            }
        )
        self._extensions = {"timeout": httpx.Timeout(settings.timeout_seconds).as_dict()}

    @property
    def limiters(self) -> RateLimiters:
        """The per-Service rate limiters every request goes through."""
        return self._limiters

    async def list_interactions(self, service_sid: str, session_sid: str) -> list[Interaction]:
        """Return every Interaction of a Session, following every page."""
        path = f"/v1/Services/{_segment(service_sid)}/Sessions/{_segment(session_sid)}/Interactions"
        target = _Target(service_sid, session_sid)
        return await self._list(target, path, "interactions", Interaction.from_api)

    async def list_sessions(self, service_sid: str) -> list[Session]:
        """Return every Session of a Service, following every page."""
        path = f"/v1/Services/{_segment(service_sid)}/Sessions"
        return await self._list(_Target(service_sid), path, "sessions", Session.from_api)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._transport.aclose()

    async def __aenter__(self) -> ProxyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # paging

    async def _list(
        self,
        target: _Target,
        path: str,
        key: str,
        build: Callable[[Mapping[str, Any]], T | None],
    ) -> list[T]:
        url: httpx.URL | None = httpx.URL(f"{self._root}{path}?PageSize={self._page_size}")
        seen: set[str] = set()
        records: list[T] = []
        while url is not None:
            self._check_paging(url, seen)
            seen.add(str(url))
            body = await self._fetch_page(target, url)
            items, next_page_url = self._page_items(body, key, url)
            for index, item in enumerate(items):
                record = build(item) if isinstance(item, Mapping) else None
                if record is None:
                    self._skip_record(item, url, index)
                else:
                    records.append(record)
            url = self._resolve_next(next_page_url, url)
        return records

    def _check_paging(self, url: httpx.URL, seen: set[str]) -> None:
        if str(url) in seen:
            raise self._malformed(url, "paging_loop", "repeats a next_page_url (a paging loop)")
        if len(seen) >= self._max_pages:
            raise self._malformed(
                url, "too_many_pages", f"goes on for more than {self._max_pages} pages"
            )

    def _page_items(self, body: object, key: str, url: httpx.URL) -> tuple[list[Any], Any]:
        if not isinstance(body, dict):
            kind = type(body).__name__
            raise self._malformed(url, "bad_json", f"is not a JSON object (got {kind})")
        meta = body.get("meta")
        if not isinstance(meta, dict):
            raise self._malformed(url, "missing_key", "has no 'meta' object")
        meta_key = meta.get("key")
        key = meta_key if isinstance(meta_key, str) and meta_key else key
        items = body.get(key)
        if not isinstance(items, list):
            raise self._malformed(url, "missing_key", f"has no list under {key!r}")
        return items, meta.get("next_page_url")

    def _skip_record(self, item: object, url: httpx.URL, index: int) -> None:
        kind = "record_without_sid" if isinstance(item, Mapping) else "record_not_object"
        TWILIO_BAD_RESPONSES.labels(kind=kind).inc()
        log.warning("twilio_record_skipped", kind=kind, path=url.path, index=index)

    def _resolve_next(self, next_page_url: object, current: httpx.URL) -> httpx.URL | None:
        if next_page_url is None or next_page_url == "":
            return None
        if not isinstance(next_page_url, str):
            raise self._malformed(current, "bad_next_page_url", "has a non-string next_page_url")
        try:
            url = self._base.join(next_page_url)
        except httpx.InvalidURL:
            raise self._malformed(
                current, "bad_next_page_url", "has a next_page_url that is not a URL"
            ) from None
        if _origin(url) != self._origin or url.userinfo:
            TWILIO_BAD_RESPONSES.labels(kind="foreign_url").inc()
            scheme, host, port = _origin(url)
            log.warning("twilio_foreign_next_page", path=current.path, host=host)
            raise ForeignURLError(
                f"Twilio's answer to GET {current.path} has a next_page_url on"
                f" {scheme}://{host}:{port}, outside twilio.base_url {self._base};"
                " not followed (credentials go only to base_url)",
                url=current.path,
            )
        return url

    # one page, with retries

    async def _fetch_page(self, target: _Target, url: httpx.URL) -> object:
        started = self._clock()
        deadline = started + self._deadline
        attempt = 0
        failure: _Failure | None = None
        while True:
            await self._limiters.acquire(target.service_sid)
            if failure is not None and self._clock() > deadline:
                raise self._exhausted(failure, url, attempt, started) from failure.error
            try:
                response = await self._send(url)
            except httpx.DecodingError as exc:
                _requests(status="error").inc()
                raise self._malformed(url, "bad_json", "has an undecodable body") from exc
            except _TRANSPORT_ERRORS as exc:
                _requests(status="error").inc()
                failure = _Failure(None, error=exc)
            else:
                _requests(status=str(response.status_code)).inc()
                if response.is_success:
                    return self._decode(response, url)
                failure = self._failure(response, target, url)
            attempt += 1
            await self._wait_before_retry(target, url, failure, attempt, started, deadline)

    async def _send(self, url: httpx.URL) -> httpx.Response:
        self._pin(url)
        request = httpx.Request("GET", url, headers=self._headers, extensions=self._extensions)
        async with self._semaphore, asyncio.timeout(self._timeout):
            # A whole-request bound: httpx's timeouts are per socket operation, so a trickling
            # body could otherwise hold a connection for ever.
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
            return response

    def _pin(self, url: httpx.URL) -> None:
        if _origin(url) != self._origin or url.userinfo:
            # Unreachable through _resolve_next; kept so no later change can leak credentials.
            raise ForeignURLError(f"refusing to send credentials to {url.host}", url=url.path)

    async def _wait_before_retry(
        self,
        target: _Target,
        url: httpx.URL,
        failure: _Failure,
        attempts: int,
        started: float,
        deadline: float,
    ) -> None:
        if failure.retry_after is not None and failure.retry_after > 0:
            wait = failure.retry_after
        else:
            wait = self._backoff.delay(attempts - 1, self._rng)
        now = self._clock()
        if now + wait > deadline:
            raise self._exhausted(failure, url, attempts, started) from failure.error
        log.warning(
            "twilio_retry",
            path=url.path,
            status=failure.status,
            error=None if failure.error is None else type(failure.error).__name__,
            attempt=attempts,
            wait=round(wait, 3),
        )
        if failure.status == 429 or failure.retry_after is not None:
            # Twilio limits the Service, not this request: hold back every request to it.
            self._limiters.pause_until(target.service_sid, now + wait)
        else:
            await self._sleep(wait)

    def _failure(self, response: httpx.Response, target: _Target, url: httpx.URL) -> _Failure:
        status = response.status_code
        if status not in RETRY_STATUSES:
            raise self._http_error(response, target, url)
        if status == 429:
            TWILIO_RATE_LIMITED.inc()
        # Measure an HTTP-date Retry-After from Twilio's own Date: immune to local clock skew.
        server_now = parse_http_date(response.headers.get("Date"))
        now = server_now if server_now is not None else self._wall_clock()
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
        return _Failure(status, retry_after=retry_after)

    def _http_error(self, response: httpx.Response, target: _Target, url: httpx.URL) -> SourceError:
        status = response.status_code
        code = _twilio_code(response)
        path = url.path
        if status in (401, 403):
            host, port = self._origin[1], self._origin[2]
            return CredentialsError(
                f"Twilio rejected the credentials (HTTP {status}{code}) for {host}:{port};"
                " check twilio.account_sid and twilio.auth_token"
                " (or twilio.api_key_sid and twilio.api_key_secret)",
                url=path,
                status=status,
            )
        if status == 404:
            return NotFoundError(target.not_found(code), url=path, status=status)
        if 300 <= status < 400:
            return SourceError(
                f"Twilio answered GET {path} with a redirect (HTTP {status}); not followed",
                url=path,
                status=status,
            )
        return SourceError(
            f"Twilio refused GET {path} (HTTP {status}{code})", url=path, status=status
        )

    def _exhausted(
        self, failure: _Failure, url: httpx.URL, attempts: int, started: float
    ) -> SourceError:
        elapsed = self._clock() - started
        detail = (
            f"after {attempts} attempts in {elapsed:.1f}s"
            f" (twilio.retry_deadline_seconds is {self._deadline:g})"
        )
        if failure.status == 429:
            return RateLimitedError(
                f"Twilio kept rate-limiting GET {url.path} (HTTP 429) {detail}",
                url=url.path,
                status=429,
            )
        return TransientSourceError(
            f"Twilio kept failing GET {url.path} ({failure.describe()}) {detail}",
            url=url.path,
            status=failure.status,
        )

    def _decode(self, response: httpx.Response, url: httpx.URL) -> object:
        try:
            body: object = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise self._malformed(url, "bad_json", "is not valid JSON") from exc
        return body

    def _malformed(self, url: httpx.URL, kind: str, problem: str) -> MalformedResponseError:
        TWILIO_BAD_RESPONSES.labels(kind=kind).inc()
        log.warning("twilio_bad_response", kind=kind, path=url.path)
        return MalformedResponseError(f"Twilio's answer to GET {url.path} {problem}", url=url.path)


@functools.cache
def _requests(status: str) -> Counter:
    """The request counter of one status: ``labels()`` takes a lock and checks on every call."""
    return TWILIO_REQUESTS.labels(status=status)


def _basic_auth(username: str, password: str) -> str:
    """The HTTP Basic ``Authorization`` value (as httpx.BasicAuth builds it)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _twilio_code(response: httpx.Response) -> str:
    """Return ``", code N"`` from Twilio's error body, or "" (the body itself is never shown)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, int) and not isinstance(code, bool):
        return f", code {code}"
    return ""
