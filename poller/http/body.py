"""One bounded read of an answer's body, while it streams.

A body is read chunk by chunk off the transport (poller.http.wire hands it over undecoded) and
inflated here (gzip, deflate) with zlib's ``max_length``: a body that is too big on the wire, or
that inflates past the cap (a gzip bomb), stops the read at the cap, having held at most the
cap and one chunk. Two ways to meet the cap:

- strict (the Twilio client's pages): more than the cap is :class:`BodyTooLarge`, an encoding
  that was not asked for :class:`BadEncoding`;
- ``cut`` (the sinks, which read an answer only for its error code): the first ``max_bytes``
  are kept and the rest is left unread; an unknown encoding is read as it is (as httpx does).

Either way a gzip or deflate body that does not inflate is :class:`UndecodableBody`, and the
response is closed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from poller.http.failures import BadEncoding, BodyTooLarge, UndecodableBody
from poller.http.status import StatusClass, classify
from poller.record import Record


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Answer(Record):
    """One answer, its body read and decoded within the cap."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return classify(self.status_code) is StatusClass.SUCCESS

    def json_object(self) -> Mapping[str, Any]:
        """The body as a JSON object, or an empty mapping when it is not one."""
        try:
            parsed = json.loads(self.content)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}


async def read_answer(response: httpx.Response, max_bytes: int, *, cut: bool = False) -> Answer:
    """Read and decode ``response``'s body within ``max_bytes``; close the response."""
    try:
        return Answer(response.status_code, response.headers, await _read(response, max_bytes, cut))
    finally:
        await response.aclose()


async def _read(response: httpx.Response, max_bytes: int, cut: bool) -> bytes:
    declared = _content_length(response.headers)
    if not cut and declared is not None and declared > max_bytes:
        raise BodyTooLarge(max_bytes, inflated=False)
    inflater = _Inflater.of(response.headers.get("Content-Encoding", ""), max_bytes, cut)
    stream = response.stream
    if not isinstance(stream, AsyncIterable):
        raise TypeError("the HTTP layer needs an async transport")
    chunks: list[bytes] = []
    wire = held = 0
    async for chunk in stream:
        wire += len(chunk)
        if wire > max_bytes and not cut:
            raise BodyTooLarge(max_bytes, inflated=False)
        decoded = inflater.feed(chunk, max_bytes - held)
        held += len(decoded)
        chunks.append(decoded)
        if cut and held >= max_bytes:
            return b"".join(chunks)
    chunks.append(inflater.finish(max_bytes - held))
    return b"".join(chunks)


def _content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


class _Inflater:
    """One body's Content-Encoding undone, never producing more than it is given room for."""

    __slots__ = ("_cut", "_max_bytes", "_started", "_wbits", "_zlib")

    def __init__(self, wbits: int | None, max_bytes: int, cut: bool) -> None:
        self._wbits = wbits  # None: identity (the wire bound is the bound)
        self._zlib = None if wbits is None else zlib.decompressobj(wbits)
        self._max_bytes = max_bytes
        self._cut = cut
        self._started = False

    @classmethod
    def of(cls, encoding: str, max_bytes: int, cut: bool) -> _Inflater:
        name = encoding.strip().lower()
        if name in ("gzip", "x-gzip"):
            return cls(zlib.MAX_WBITS | 16, max_bytes, cut)
        if name == "deflate":
            return cls(zlib.MAX_WBITS, max_bytes, cut)
        # Only gzip and deflate are asked for (Accept-Encoding).
        if name not in ("", "identity") and not cut:
            raise BadEncoding()
        return cls(None, max_bytes, cut)

    def feed(self, data: bytes, room: int) -> bytes:
        """Decode one chunk; more than ``room`` decoded bytes is too large (or cut there)."""
        if self._zlib is None:
            return self._fits(data, room) if self._cut else data
        first, self._started = not self._started, True
        try:
            # max_length stops inflating one byte past the room: a bomb never unfolds here.
            return self._fits(self._zlib.decompress(data, room + 1), room)
        except zlib.error as exc:
            if not (first and self._wbits == zlib.MAX_WBITS):
                raise UndecodableBody() from exc
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
            raise UndecodableBody() from exc

    def _fits(self, decoded: bytes, room: int) -> bytes:
        if len(decoded) <= room:
            return decoded
        if self._cut:
            return decoded[: max(room, 0)]
        raise BodyTooLarge(self._max_bytes, inflated=True)
