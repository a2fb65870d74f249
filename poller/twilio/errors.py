"""Twilio's answers -> the ``SourceError`` tree, and the metrics and logs of bad answers.

Each helper takes what it describes (the response, the path, the listing) and returns the
exception for ``poller.twilio.client.ProxyClient`` to raise; none of them sends a request.
Messages name the resource, the status and Twilio's error code, never a response body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx
import structlog

from poller.errors import (
    CredentialsError,
    ForeignURLError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    SourceError,
    TransientSourceError,
)
from poller.http.status import StatusClass, classify, parse_http_date, retry_after
from poller.observe.metrics import TWILIO_BAD_RESPONSES, TWILIO_RATE_LIMITED
from poller.record import Record
from poller.twilio.ratelimit import Clock

log = structlog.get_logger(__name__)


class Reply(Protocol):
    """What the helpers read of an answer (``poller.http.body.Answer``, an ``httpx.Response``)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> httpx.Headers: ...
    @property
    def content(self) -> bytes: ...


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Target(Record):
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


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Failure(Record):
    """One retryable failure: an HTTP status, or a transport error (status None)."""

    status: int | None
    retry_after: float | None = None
    error: BaseException | None = None

    def describe(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}"
        return type(self.error).__name__


def retryable_failure(response: Reply, wall_clock: Clock) -> Failure:
    """Describe a retryable answer (429 or 5xx), with the wait its Retry-After asks for."""
    status = response.status_code
    if classify(status) is StatusClass.RATE_LIMITED:
        TWILIO_RATE_LIMITED.inc()
    # Measure an HTTP-date Retry-After from Twilio's own Date: immune to local clock skew.
    server_now = parse_http_date(response.headers.get("Date"))
    now = server_now if server_now is not None else wall_clock()
    return Failure(status, retry_after=retry_after(response.headers, now))


def http_error(
    response: Reply, target: Target, path: str, host: str, port: int | None
) -> SourceError:
    """The error for an answer that no retry can fix (``host:port`` names the credentials')."""
    status = response.status_code
    code = twilio_code(response)
    if status in (401, 403):
        return CredentialsError(
            f"Twilio rejected the credentials (HTTP {status}{code}) for {host}:{port};"
            " check twilio.account_sid and twilio.auth_token"
            " (or twilio.api_key_sid and twilio.api_key_secret)",
            url=path,
            status=status,
        )
    if status == 404:
        return NotFoundError(target.not_found(code), url=path, status=status)
    if classify(status) is StatusClass.REDIRECT:
        return SourceError(
            f"Twilio answered GET {path} with a redirect (HTTP {status}); not followed",
            url=path,
            status=status,
        )
    return SourceError(f"Twilio refused GET {path} (HTTP {status}{code})", url=path, status=status)


def exhausted(
    failure: Failure, path: str, attempts: int, elapsed: float, deadline_seconds: float
) -> SourceError:
    """The error for a page that kept failing until the retry deadline."""
    detail = (
        f"after {attempts} attempts in {elapsed:.1f}s"
        f" (twilio.retry_deadline_seconds is {deadline_seconds:g})"
    )
    if failure.status == 429:
        return RateLimitedError(
            f"Twilio kept rate-limiting GET {path} (HTTP 429) {detail}",
            url=path,
            status=429,
        )
    return TransientSourceError(
        f"Twilio kept failing GET {path} ({failure.describe()}) {detail}",
        url=path,
        status=failure.status,
    )


def malformed(path: str, kind: str, problem: str) -> MalformedResponseError:
    """Count and log a bad answer to ``GET path``; return its error."""
    TWILIO_BAD_RESPONSES.labels(kind=kind).inc()
    log.warning("twilio_bad_response", kind=kind, path=path)
    return MalformedResponseError(f"Twilio's answer to GET {path} {problem}", url=path)


def foreign_next_page(
    path: str, origin: tuple[str, str, int | None], base: httpx.URL
) -> ForeignURLError:
    """Count and log a next_page_url on ``origin``, outside ``base`` (the answer to GET path)."""
    TWILIO_BAD_RESPONSES.labels(kind="foreign_url").inc()
    scheme, host, port = origin
    log.warning("twilio_foreign_next_page", path=path, host=host)
    return ForeignURLError(
        f"Twilio's answer to GET {path} has a next_page_url on"
        f" {scheme}://{host}:{port}, outside twilio.base_url {base};"
        " not followed (credentials go only to base_url)",
        url=path,
    )


def skip_record(item: object, path: str, index: int) -> None:
    """Count and log a page's record that is not a record (not an object, or without a sid)."""
    kind = "record_without_sid" if isinstance(item, Mapping) else "record_not_object"
    TWILIO_BAD_RESPONSES.labels(kind=kind).inc()
    log.warning("twilio_record_skipped", kind=kind, path=path, index=index)


def twilio_code(response: Reply) -> str:
    """Return ``", code N"`` from Twilio's error body, or "" (the body itself is never shown)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, int) and not isinstance(code, bool):
        return f", code {code}"
    return ""
