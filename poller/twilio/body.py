"""How much one Twilio answer may hold, and reading a body within that while it streams.

A body is read chunk by chunk off the transport (httpx-aiohttp hands it over undecoded) and
inflated here (gzip, deflate) with zlib's ``max_length``: a page that is too big on the wire, or
that inflates past the limit (a gzip bomb), stops the read at the limit, having held at most
the limit and one chunk. The bounds on a whole listing (pages, records) are checked by the
client as the pages come.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Protocol

import httpx

from poller.errors import MalformedResponseError
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


@dataclass(frozen=True, slots=True)
class AnswerLimits:
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


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer, its body read and decoded within the limits."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


async def read_answer(response: httpx.Response, max_bytes: int, path: str) -> Answer:
    """Read and decode ``response``'s body, refusing more than ``max_bytes`` either way.

    Raises MalformedResponseError (kinds ``body_too_large``, ``inflated_body_too_large``,
    ``bad_encoding``, ``bad_json``); the response is closed in every case.
    """
    try:
        declared = _content_length(response.headers)
        if declared is not None and declared > max_bytes:
            raise _too_large(path, max_bytes)
        encoding = response.headers.get("Content-Encoding", "")
        inflater = _Inflater.of(encoding, path, max_bytes)
        stream = response.stream
        if not isinstance(stream, AsyncIterable):
            raise TypeError("the Twilio client needs an async transport")
        chunks: list[bytes] = []
        wire = held = 0
        async for chunk in stream:
            wire += len(chunk)
            if wire > max_bytes:
                raise _too_large(path, max_bytes)
            decoded = inflater.feed(chunk, max_bytes - held)
            held += len(decoded)
            chunks.append(decoded)
        chunks.append(inflater.finish(max_bytes - held))
        return Answer(response.status_code, response.headers, b"".join(chunks))
    finally:
        await response.aclose()


def _content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _too_large(path: str, max_bytes: int) -> MalformedResponseError:
    return malformed(
        path, "body_too_large", f"is larger than {max_bytes} bytes (twilio.max_page_bytes)"
    )


class _Inflater:
    """One body's Content-Encoding undone, never producing more than it is given room for."""

    def __init__(self, wbits: int | None, path: str, max_bytes: int) -> None:
        self._wbits = wbits  # None: identity (the wire bound is the bound)
        self._zlib = None if wbits is None else zlib.decompressobj(wbits)
        self._path = path
        self._max_bytes = max_bytes
        self._started = False

    @classmethod
    def of(cls, encoding: str, path: str, max_bytes: int) -> _Inflater:
        name = encoding.strip().lower()
        if name in ("", "identity"):
            return cls(None, path, max_bytes)
        if name in ("gzip", "x-gzip"):
            return cls(zlib.MAX_WBITS | 16, path, max_bytes)
        if name == "deflate":
            return cls(zlib.MAX_WBITS, path, max_bytes)
        # Only gzip and deflate are asked for (Accept-Encoding).
        raise malformed(path, "bad_encoding", "has a Content-Encoding that was not asked for")

    def feed(self, data: bytes, room: int) -> bytes:
        """Decode one chunk; raise when it holds more than ``room`` decoded bytes."""
        if self._zlib is None:
            return data
        first, self._started = not self._started, True
        try:
            # max_length stops inflating one byte past the room: a bomb never unfolds here.
            return self._fits(self._zlib.decompress(data, room + 1), room)
        except zlib.error as exc:
            if not (first and self._wbits == zlib.MAX_WBITS):
                raise self._undecodable() from exc
        # Some servers send raw deflate, without the zlib header (httpx accepts it too).
        self._wbits = -zlib.MAX_WBITS
        self._zlib = zlib.decompressobj(self._wbits)
        return self.feed(data, room)

    def finish(self, room: int) -> bytes:
        if self._zlib is None:
            return b""
        try:
            return self._fits(self._zlib.flush(), room)
        except zlib.error as exc:
            raise self._undecodable() from exc

    def _fits(self, decoded: bytes, room: int) -> bytes:
        if len(decoded) > room:
            raise malformed(
                self._path,
                "inflated_body_too_large",
                f"inflates to more than {self._max_bytes} bytes (twilio.max_page_bytes)",
            )
        return decoded

    def _undecodable(self) -> MalformedResponseError:
        return malformed(self._path, "bad_json", "has an undecodable body")
