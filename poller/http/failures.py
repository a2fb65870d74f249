"""The failures of the HTTP layer, and the one translation of what a transport raises.

    HttpFailure              an exchange that gave no usable answer
     +-- NoAnswer            no HTTP answer came back (``reason``: what happened)
     |    +-- TimedOut       none within the time bound
     |    +-- TransportFailed  the connection failed, was reset, or what came back was not HTTP
     +-- BadBody             an answer came, its body could not be read within its bounds
          +-- BodyTooLarge   more than the byte cap, on the wire or inflated (``inflated``)
          +-- BadEncoding    a Content-Encoding that was not asked for
          +-- UndecodableBody  a gzip or deflate body that does not inflate

Nothing deeper than the Twilio client and the sinks sees these: each turns them into its own
``SourceError`` or ``DeliveryError``. What the transport (httpx's exceptions) and asyncio's
timeout raise is translated in one place, :func:`answer_within`, as httpx's
``map_httpcore_exceptions`` does; the foreign exception stays chained (``__cause__``) and in
``error``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import httpx

# What a request that got no answer raises: the transport's errors, and the whole-request
# bound's TimeoutError.
NO_ANSWER_ERRORS = (httpx.RequestError, TimeoutError)


class HttpFailure(Exception):
    """An exchange that gave no usable answer; ``reason`` says why in a few safe characters."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoAnswer(HttpFailure):
    """No HTTP answer came back; ``error`` is what the transport raised."""

    def __init__(self, reason: str, error: BaseException) -> None:
        super().__init__(reason)
        self.error = error


class TimedOut(NoAnswer):
    """No answer within the time bound (a socket operation's, or the whole request's)."""


class TransportFailed(NoAnswer):
    """The connection failed or was reset, or what came back was not HTTP."""


class BadBody(HttpFailure):
    """An answer came, but its body could not be read within its bounds."""


class BodyTooLarge(BadBody):
    """The body holds more than the cap: on the wire, or once inflated (``inflated``)."""

    def __init__(self, max_bytes: int, *, inflated: bool) -> None:
        super().__init__("inflated_body_too_large" if inflated else "body_too_large")
        self.max_bytes = max_bytes
        self.inflated = inflated


class BadEncoding(BadBody):
    """The body has a Content-Encoding that was not asked for."""

    def __init__(self) -> None:
        super().__init__("bad_encoding")


class UndecodableBody(BadBody):
    """The body says gzip or deflate and does not inflate."""

    def __init__(self) -> None:
        super().__init__("undecodable_body")


def no_answer(error: BaseException) -> NoAnswer:
    """Translate what a transport raised for a request that got no answer.

    The reason is the name of the ``OSError`` the transport chained, where there is one (it
    says more: ``ConnectionRefusedError``, ``ConnectionResetError``,
    ``SSLCertVerificationError``), else of the error itself (``ReadTimeout``,
    ``RemoteProtocolError``).
    """
    cause = error.__cause__
    chained_os_error = isinstance(cause, OSError) and not isinstance(cause, TimeoutError)
    actual = cause if chained_os_error else error
    reason = type(actual).__name__
    if isinstance(actual, httpx.TimeoutException | TimeoutError):
        return TimedOut(reason, error)
    return TransportFailed(reason, error)


def answer_within(seconds: float | None) -> AnswerWithin:
    """Bound one whole request (send and read) to ``seconds`` and translate its failures.

    ``async with answer_within(20.0): ...`` raises :class:`NoAnswer` for whatever the
    transport raised (:data:`NO_ANSWER_ERRORS`) and for the bound itself: the transport's
    timeouts are per socket operation, so a trickling answer could otherwise hold a connection
    for ever. ``None`` leaves the bound to the transport's per-operation timeouts.
    """
    return AnswerWithin(seconds)


class AnswerWithin:
    """The context of :func:`answer_within`."""

    __slots__ = ("_timeout",)

    def __init__(self, seconds: float | None) -> None:
        self._timeout = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as expired:
            raise no_answer(expired) from expired
        if isinstance(exc, NO_ANSWER_ERRORS):
            raise no_answer(exc) from exc
