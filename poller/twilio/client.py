"""Async client for Twilio Proxy's list endpoints.

One pooled HTTP client; HTTP Basic credentials only ever go to the scheme, host and port of
``twilio.base_url``; every page (next pages too) takes a token of its Service's rate limiter;
429, 5xx and transport failures are retried with jittered backoff until a deadline, resuming at
the page that failed. Every answer is bounded (``poller.twilio.body``: bytes per page, on the
wire and inflated; pages and records per listing). Twilio's JSON becomes typed records here;
nothing deeper sees raw pages. Failed and malformed answers become ``SourceError``s in
``poller.twilio.errors``.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
import orjson
import structlog

from poller.backoff import Backoff
from poller.errors import ForeignURLError, MalformedResponseError, SourceError
from poller.http.body import Answer
from poller.http.failures import NoAnswer, answer_within
from poller.http.transport import (
    ACCEPT_ENCODING,
    USER_AGENT,
    basic_auth,
    pooled_transport,
    timeout_extensions,
)
from poller.observe.metrics import TWILIO_REQUESTS
from poller.twilio.body import AnswerLimits, read_page
from poller.twilio.errors import (
    Failure,
    Target,
    exhausted,
    foreign_next_page,
    http_error,
    malformed,
    retryable_failure,
    skip_record,
)
from poller.twilio.ratelimit import Clock, RateLimiters, Sleep
from poller.twilio.records import Interaction, Session

if TYPE_CHECKING:
    from prometheus_client import Counter

log = structlog.get_logger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_BACKOFF = Backoff(base=0.5, factor=2.0, cap=30.0, jitter="full")

_DEFAULT_PORTS = {"http": 80, "https": 443}

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


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _segment(sid: str) -> str:
    return quote(sid, safe="")


class ProxyClient:
    """Lists a Proxy Service's Sessions and a Session's Interactions; fetches one Session."""

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
        limits: AnswerLimits | None = None,
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
        self._limits = limits if limits is not None else AnswerLimits()
        rate = settings.max_requests_per_second
        self._limiters = RateLimiters(rate, max(1.0, rate), clock=clock, sleep=sleep)
        concurrency = max(1, settings.max_concurrency)
        self._semaphore = asyncio.Semaphore(concurrency)
        if transport is None:
            # Measured by bench/bench_transport.py: httpx over poller.http.wire costs 0.44x the
            # CPU of httpx's own async transport for the same pages.
            pool = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            # An http:// base_url never speaks TLS (_pin keeps the scheme): no context, no CA
            # bundle loaded for it (tens of milliseconds).
            transport = pooled_transport(pool, verify=base.scheme == "https")
        # Requests go straight to the transport: every request is one GET to base_url's origin,
        # so AsyncClient's per-request work (merging, the auth flow, redirects, the cookie jar)
        # would only cost CPU (about a tenth of a full scan's, by bench/bench_fullscan.py).
        self._transport = transport
        self._headers = httpx.Headers(
            {
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
                "Authorization": basic_auth(*settings.credentials),
            }
        )
        self._extensions = timeout_extensions(settings.timeout_seconds)
        self._memos: dict[str, _ListingMemo] = {}

    async def list_interactions(self, service_sid: str, session_sid: str) -> list[Interaction]:
        """Return every Interaction of a Session, following every page."""
        path = f"/v1/Services/{_segment(service_sid)}/Sessions/{_segment(session_sid)}/Interactions"
        target = Target(service_sid, session_sid)
        cap = (self._limits.max_interactions_per_session, "twilio.max_interactions_per_session")
        return await self._list(target, path, "interactions", Interaction.from_api, cap, None)

    async def list_sessions(self, service_sid: str) -> list[Session]:
        """Return every Session of a Service, following every page."""
        path = f"/v1/Services/{_segment(service_sid)}/Sessions"
        cap = (self._limits.max_sessions_per_service, "twilio.max_sessions_per_service")
        # Most of a large Service's pages are the same bytes cycle after cycle: their Sessions
        # are built once (see _ListingMemo), the listing's other checks made every time.
        memo = self._memos.setdefault(service_sid, _ListingMemo())
        return await self._list(Target(service_sid), path, "sessions", Session.from_api, cap, memo)

    async def fetch_session(self, service_sid: str, session_sid: str) -> Session:
        """Return one Session (``GET .../Sessions/{sid}``), with the listings' pinning, rate
        limit, retries and bounds; an answer that is not that Session is malformed."""
        path = f"/v1/Services/{_segment(service_sid)}/Sessions/{_segment(session_sid)}"
        url = httpx.URL(f"{self._root}{path}")
        body = self._decode(await self._fetch_page(Target(service_sid, session_sid), url), url)
        if not isinstance(body, dict):
            kind = type(body).__name__
            raise malformed(url.path, "bad_json", f"is not a JSON object (got {kind})")
        session = Session.from_api(body)
        if session is None or session.sid != session_sid:
            raise malformed(url.path, "sid_mismatch", f"is not the Session {session_sid}")
        return session

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
        target: Target,
        path: str,
        key: str,
        build: Callable[[Mapping[str, Any]], T | None],
        cap: tuple[int, str],
        memo: _ListingMemo | None,
    ) -> list[T]:
        """Every record of a listing; ``memo``: the pages of its last listing, to reuse."""
        url: httpx.URL | None = httpx.URL(f"{self._root}{path}?PageSize={self._page_size}")
        seen: set[str] = set()
        records: list[T] = []
        pages: dict[str, _Page] = {}
        while url is not None:
            self._check_paging(url, seen)
            address = str(url)
            seen.add(address)
            content = await self._fetch_page(target, url)
            page = None if memo is None else memo.get(address, content)
            if page is None:
                page = self._read_items(content, url, key, build, cap, len(records))
            _check_count(len(records) + len(page.records), cap, key, url)
            records.extend(page.records)
            if memo is not None and page.clean:
                pages[address] = page
            url = self._resolve_next(page.next_page_url, url)
        if memo is not None:
            memo.pages = pages
        return records

    def _read_items(
        self,
        content: bytes,
        url: httpx.URL,
        key: str,
        build: Callable[[Mapping[str, Any]], T | None],
        cap: tuple[int, str],
        before: int,
    ) -> _Page:
        """Decode one page and build its records (``before``: records of earlier pages)."""
        items, next_page_url = self._page_items(self._decode(content, url), key, url)
        _check_count(before + len(items), cap, key, url)
        built: list[Any] = []
        for index, item in enumerate(items):
            # orjson's objects are dicts: dict first, the ABC's check only for anything else
            record = build(item) if isinstance(item, (dict, Mapping)) else None
            if record is None:
                skip_record(item, url.path, index)
            else:
                built.append(record)
        return _Page(content, built, next_page_url, clean=len(built) == len(items))

    def _check_paging(self, url: httpx.URL, seen: set[str]) -> None:
        if str(url) in seen:
            raise malformed(url.path, "paging_loop", "repeats a next_page_url (a paging loop)")
        if len(seen) >= self._limits.max_pages:
            raise malformed(
                url.path,
                "too_many_pages",
                f"goes on for more than {self._limits.max_pages} pages (twilio.max_pages)",
            )

    def _page_items(self, body: object, key: str, url: httpx.URL) -> tuple[list[Any], Any]:
        if not isinstance(body, dict):
            kind = type(body).__name__
            raise malformed(url.path, "bad_json", f"is not a JSON object (got {kind})")
        meta = body.get("meta")
        if not isinstance(meta, dict):
            raise malformed(url.path, "missing_key", "has no 'meta' object")
        # The answer names its own list: one naming another is not the listing asked for (a
        # proxy's or an API version's mistake), and reading it as an empty one would hide that.
        meta_key = meta.get("key")
        if meta_key != key:
            raise malformed(
                url.path, "meta_key_mismatch", f"names {_shown(meta_key)} in meta.key, not {key!r}"
            )
        items = body.get(key)
        if not isinstance(items, list):
            raise malformed(url.path, "missing_list", f"has no list under {key!r}")
        return items, meta.get("next_page_url")

    def _resolve_next(self, next_page_url: object, current: httpx.URL) -> httpx.URL | None:
        if next_page_url is None or next_page_url == "":
            return None
        if not isinstance(next_page_url, str):
            raise malformed(current.path, "bad_next_page_url", "has a non-string next_page_url")
        try:
            url = self._base.join(next_page_url)
        except httpx.InvalidURL:
            raise malformed(
                current.path, "bad_next_page_url", "has a next_page_url that is not a URL"
            ) from None
        if _origin(url) != self._origin or url.userinfo:
            raise foreign_next_page(current.path, _origin(url), self._base)
        return url

    # one page, with retries

    async def _fetch_page(self, target: Target, url: httpx.URL) -> bytes:
        started = self._clock()
        deadline = started + self._deadline
        attempt = 0
        failure: Failure | None = None
        while True:
            await self._limiters.acquire(target.service_sid)
            if failure is not None and self._clock() > deadline:
                raise self._exhausted(failure, url, attempt, started) from failure.error
            try:
                response = await self._send(url)
            except MalformedResponseError:
                _requests(status="error").inc()  # its body was refused (too large, undecodable)
                raise
            except NoAnswer as exc:
                _requests(status="error").inc()
                failure = Failure(None, error=exc.error)  # named and chained as it was raised
            else:
                _requests(status=str(response.status_code)).inc()
                if response.is_success:
                    return response.content
                if response.status_code not in RETRY_STATUSES:
                    _, host, port = self._origin
                    raise http_error(response, target, url.path, host, port)
                failure = retryable_failure(response, self._wall_clock)
            attempt += 1
            await self._wait_before_retry(target, url, failure, attempt, started, deadline)

    async def _send(self, url: httpx.URL) -> Answer:
        self._pin(url)
        request = httpx.Request("GET", url, headers=self._headers, extensions=self._extensions)
        async with self._semaphore, answer_within(self._timeout):
            response = await self._transport.handle_async_request(request)
            return await read_page(response, self._limits.max_page_bytes, url.path)

    def _pin(self, url: httpx.URL) -> None:
        if _origin(url) != self._origin or url.userinfo:
            # Unreachable through _resolve_next; kept so no later change can leak credentials.
            raise ForeignURLError(f"refusing to send credentials to {url.host}", url=url.path)

    async def _wait_before_retry(
        self,
        target: Target,
        url: httpx.URL,
        failure: Failure,
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

    def _exhausted(
        self, failure: Failure, url: httpx.URL, attempts: int, started: float
    ) -> SourceError:
        elapsed = self._clock() - started
        return exhausted(failure, url.path, attempts, elapsed, self._deadline)

    def _decode(self, content: bytes, url: httpx.URL) -> object:
        try:
            body: object = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise malformed(url.path, "bad_json", "is not valid JSON") from exc
        return body


@dataclass(slots=True)
class _Page:
    """One page of a listing as read: its bytes, its records, where it points next.

    ``clean``: every item was a record (a page with a skipped item is read again each time,
    so that each listing logs what it skipped).
    """

    content: bytes
    records: list[Any]
    next_page_url: object
    clean: bool


@dataclass(slots=True)
class _ListingMemo:
    """The clean pages of one Service's last Sessions listing, by URL."""

    pages: dict[str, _Page] = field(default_factory=dict)

    def get(self, url: str, content: bytes) -> _Page | None:
        """The page read last time at ``url``, if Twilio answered the very same bytes."""
        page = self.pages.get(url)
        return page if page is not None and page.content == content else None


def _check_count(count: int, cap: tuple[int, str], key: str, url: httpx.URL) -> None:
    limit, setting = cap
    if count > limit:
        raise malformed(url.path, "too_many_records", f"lists more than {limit} {key} ({setting})")


@functools.cache
def _requests(status: str) -> Counter:
    """The request counter of one status: ``labels()`` takes a lock and checks on every call."""
    return TWILIO_REQUESTS.labels(status=status)


def _shown(value: object) -> str:
    """Name a meta.key in an error: a short identifier as itself, never anything longer."""
    if isinstance(value, str) and len(value) <= 40 and value.isidentifier():
        return repr(value)
    return "nothing" if value is None else f"a {type(value).__name__}"
