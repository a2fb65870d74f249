"""How much one Twilio answer may hold, and a page's body read within that.

A page is read by :func:`poller.http.body.read_answer` (chunk by chunk, inflated within the
limit, stopped at it); what it refuses becomes a ``MalformedResponseError`` here, counted and
logged. The bounds on a whole listing (pages, records) are checked by the client as the pages
come.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx

from poller.http.body import Answer, read_answer
from poller.http.failures import BadEncoding, BodyTooLarge, UndecodableBody
from poller.record import Record
from poller.twilio.errors import malformed

MIB = 1024 * 1024
# A page of the spec's maximum 1,000 records with every field filled (a 1,600-character body
# whose every character is \u-escaped inside Twilio's JSON-in-JSON ``data``) is about 12 MiB.
DEFAULT_MAX_PAGE_BYTES = 32 * MIB
DEFAULT_MAX_PAGES = 1_000
# About 2.3 KB of memory per parsed interaction: 50,000 stay near 120 MB.
DEFAULT_MAX_INTERACTIONS = 50_000
DEFAULT_MAX_SESSIONS = 100_000


class LimitSettings(Protocol):
    """What the limits read from ``TwilioConfig``."""

    @property
    def max_page_bytes(self) -> int: ...
    @property
    def max_pages(self) -> int: ...
    @property
    def max_interactions_per_session(self) -> int: ...
    @property
    def max_sessions_per_service(self) -> int: ...


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class AnswerLimits(Record):
    """The bounds on Twilio's answers (``twilio.max_*`` in the config)."""

    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES
    max_pages: int = DEFAULT_MAX_PAGES
    max_interactions_per_session: int = DEFAULT_MAX_INTERACTIONS
    max_sessions_per_service: int = DEFAULT_MAX_SESSIONS

    @classmethod
    def of(cls, settings: LimitSettings) -> AnswerLimits:
        """The limits a ``TwilioConfig`` sets."""
        return cls(
            settings.max_page_bytes,
            settings.max_pages,
            settings.max_interactions_per_session,
            settings.max_sessions_per_service,
        )


async def read_page(response: httpx.Response, max_bytes: int, path: str) -> Answer:
    """Read and decode ``response``'s body, refusing more than ``max_bytes`` either way.

    Raises MalformedResponseError (kinds ``body_too_large``, ``inflated_body_too_large``,
    ``bad_encoding``, ``bad_json``); the response is closed in every case.
    """
    try:
        return await read_answer(response, max_bytes)
    except BodyTooLarge as exc:
        if exc.inflated:
            problem = f"inflates to more than {max_bytes} bytes (twilio.max_page_bytes)"
        else:
            problem = f"is larger than {max_bytes} bytes (twilio.max_page_bytes)"
        raise malformed(path, exc.reason, problem) from exc
    except BadEncoding as exc:
        problem = "has a Content-Encoding that was not asked for"
        raise malformed(path, "bad_encoding", problem) from exc
    except UndecodableBody as exc:
        raise malformed(path, "bad_json", "has an undecodable body") from exc
