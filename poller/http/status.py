"""What an HTTP status means to a client that never follows redirects, and ``Retry-After``.

    SUCCESS        2xx
    REDIRECT       3xx (never followed: the configured URL should be the final one)
    RATE_LIMITED   429, usually with a ``Retry-After``
    RETRY_LATER    408 (the server timed out reading the request), 425 (too early)
    GONE           410: the server asks never to be called at this URL again
    CLIENT_ERROR   any other 4xx: this request will never get through as it is
    SERVER_ERROR   5xx (and anything above)
    UNEXPECTED     1xx and below: never a final answer

Each caller decides what a class means for it (the Twilio client retries 429 and some 5xx; a
sink dead-letters a CLIENT_ERROR); the numbers are read here only.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

# A server asking for more than a day is broken or hostile; waiting longer helps nobody.
MAX_RETRY_AFTER_SECONDS = 86_400.0

_DELTA_SECONDS = re.compile(r"-?\d+(?:\.\d+)?")


class StatusClass(enum.Enum):
    """What one HTTP status says about the request (the module docstring has the table)."""

    SUCCESS = "2xx"
    REDIRECT = "3xx"
    RATE_LIMITED = "429"
    RETRY_LATER = "408/425"
    GONE = "410"
    CLIENT_ERROR = "4xx"
    SERVER_ERROR = "5xx"
    UNEXPECTED = "1xx"


_PARTICULAR = {
    429: StatusClass.RATE_LIMITED,
    408: StatusClass.RETRY_LATER,
    425: StatusClass.RETRY_LATER,
    410: StatusClass.GONE,
}


def classify(status: int) -> StatusClass:
    """Return the class of ``status``."""
    if 200 <= status < 300:
        return StatusClass.SUCCESS
    particular = _PARTICULAR.get(status)
    if particular is not None:
        return particular
    if status >= 500:
        return StatusClass.SERVER_ERROR
    if status >= 400:
        return StatusClass.CLIENT_ERROR
    if status >= 300:
        return StatusClass.REDIRECT
    return StatusClass.UNEXPECTED


def retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Return the seconds an answer's ``Retry-After`` asks to wait (:func:`parse_retry_after`)."""
    return parse_retry_after(headers.get("retry-after"), now)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the seconds a ``Retry-After`` header asks to wait, or None when it is unusable.

    ``value`` is delta-seconds or an HTTP date; ``now`` is the Unix time the date is measured
    from (best: the response's ``Date``). Past dates and negative numbers give 0; anything above
    a day is capped at a day.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        moment = parse_http_date(text)
        if moment is None:
            return None
        seconds = moment - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def parse_http_date(value: str | None) -> float | None:
    """Return the Unix time of an HTTP date (RFC 9110 IMF-fixdate and its obsolete forms)."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        # "-0000" parses naive; HTTP dates are always GMT.
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
