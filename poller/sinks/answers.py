"""How a destination's answer becomes a ``DeliveryError``: one table per sink, one way to act.

Each of the Teams, Discord and email sinks keeps a table ``answer -> (outcome, reason)`` in its
own module docstring and code; this module turns a row into the error the dispatcher acts on,
with one warning log event and one ``poller_sink_answers`` sample, so that every sink reports
its answers the same way. The reason is one line, it ends up in ``poller outbox list``, and it
never holds a URL, a credential or a message.

    retry      RetryableDeliveryError (with the destination's pause, when it gave one)
    permanent  PermanentDeliveryError: this payload will never get through; dead-letter it
    disabled   SinkDisabledError: nothing will get through any more (a webhook that is gone)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import structlog

from poller.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.http.status import StatusClass, classify
from poller.observe.metrics import SINK_ANSWERS, SINK_RATE_LIMITED

log = structlog.get_logger(__name__)

Outcome = Literal["retry", "permanent", "disabled"]
Verdict = tuple[Outcome, str]

# What an HTTP destination's status means when its sink's table has no row for it.
_HTTP_DEFAULTS: Mapping[int, Verdict] = {
    408: ("retry", "the destination timed out reading the request"),
    425: ("retry", "the destination asked to retry later"),
}
_BY_CLASS: Mapping[StatusClass, Verdict] = {
    StatusClass.RATE_LIMITED: (
        "retry",
        "the destination rate-limits this sink; the message waits its turn",
    ),
    StatusClass.GONE: ("disabled", "Gone: the destination asked never to be called again"),
    StatusClass.SERVER_ERROR: ("retry", "the destination had a server error"),
    StatusClass.REDIRECT: ("retry", "a redirect (never followed; configure the final URL)"),
    StatusClass.CLIENT_ERROR: (
        "permanent",
        "the destination refused the message; it is dead-lettered",
    ),
}


def http_verdict(status: int, table: Mapping[int, Verdict]) -> Verdict:
    """Return the sink's row for ``status``, else the meaning every HTTP destination shares."""
    known = table.get(status) or _HTTP_DEFAULTS.get(status)
    if known is not None:
        return known
    return _BY_CLASS.get(classify(status), ("retry", "an unexpected answer"))


def count_delivered(sink: str) -> None:
    """Count an answer that took the message."""
    SINK_ANSWERS.labels(sink=sink, outcome="delivered", answer="ok").inc()


def failure(
    kind: str,
    sink: str,
    answer: str,
    verdict: Verdict,
    *,
    status: int | None = None,
    retry_after: float | None = None,
) -> DeliveryError:
    """Log and count one refused delivery; return the error that says what happens next.

    ``kind`` names the destination ("teams"), ``answer`` the answer in a few safe characters
    ("HTTP 429", "SMTP 535", "timeout").
    """
    outcome, reason = verdict
    SINK_ANSWERS.labels(sink=sink, outcome=outcome, answer=answer).inc()
    if status == 429:
        SINK_RATE_LIMITED.labels(sink=sink).inc()
    log.warning(
        "sink_delivery_failed",
        sink=sink,
        destination=kind,
        answer=answer,
        status=status,
        outcome=outcome,
        reason=reason,
        retry_after=retry_after,
    )
    message = f"{kind} sink {sink!r}: {answer} ({reason})"
    if outcome == "disabled":
        return SinkDisabledError(message, status=status)
    if outcome == "permanent":
        return PermanentDeliveryError(message, status=status)
    return RetryableDeliveryError(message, status=status, retry_after=retry_after)
