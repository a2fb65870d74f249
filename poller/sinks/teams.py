"""The Microsoft Teams sink: one Adaptive Card per event, or one digest card for a burst.

Messages go to a Teams Workflows webhook ("When a Teams webhook request is received"; the
Office 365 connectors are retired) as ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard 1.4>}]}``. Each payload is
kept within Teams' 28 KB; text from Twilio is escaped for the card's markdown
(:func:`escape`), so a body holding ``[x](http://evil)`` or ``**`` shows those characters, and
it never carries mention entities, so nobody is ever pinged.

How an answer is classified (the dispatcher decides what happens next):

    2xx (Workflows answers 202)   success
    429                           retry, after Teams' ``Retry-After`` (later posts wait too)
    408, 5xx, 3xx (never followed)  retry
    timeout, transport failure    retry
    400                           permanent: Teams could not read the card
    413                           permanent: the card is larger than Teams takes
    401, 403                      disabled: the URL's signature is refused (copy the URL again)
    404                           disabled: the workflow or its trigger no longer exists
    410                           disabled (Gone)
    other 4xx                     permanent
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from poller.events import Event
from poller.http.status import StatusClass, classify, retry_after
from poller.sinks.answers import Verdict, count_delivered, failure, http_verdict
from poller.sinks.jsonpost import ChatWebhookSink, encode
from poller.sinks.render import DigestSummary, Summary, summarize, summarize_digest

MAX_PAYLOAD_BYTES = 28 * 1024
# Room kept under the limit for the closing "and N more" line of a digest.
_MARGIN = 512
POST_INTERVAL_SECONDS = 0.25  # Teams throttles webhooks at about four posts a second
MAX_BODY = 4000
MAX_VALUE = 400
DIGEST_EXCERPT = 160
CARD_TYPE = "application/vnd.microsoft.card.adaptive"

ANSWERS: Mapping[int, Verdict] = {
    400: ("permanent", "Teams could not read the card; it is dead-lettered"),
    413: ("permanent", "the card is larger than Teams takes; it is dead-lettered"),
    401: ("disabled", "Teams refused the URL's signature; copy the workflow's URL again"),
    403: ("disabled", "Teams refused the URL's signature; copy the workflow's URL again"),
    404: ("disabled", "the workflow or its trigger no longer exists; create a new one"),
    429: ("retry", "Teams throttles this webhook; the message waits its turn"),
}

_MARKDOWN = re.compile(r"([\\`*_~\[\]()#+\-!|>{}])")
_ORDERED = re.compile(r"^(\d+)\.", re.MULTILINE)  # "1. x" at a line's start is a list


def escape(text: str) -> str:
    """Return ``text`` so that an Adaptive Card's markdown shows it literally."""
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return _ORDERED.sub(r"\1\\.", _MARKDOWN.sub(r"\\\1", text))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more)"


def _block(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _facts(facts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "FactSet",
        "facts": [{"title": escape(k), "value": escape(_cut(v, MAX_VALUE))} for k, v in facts],
    }


def message(body: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Wrap card elements in the message a Workflows webhook takes."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": list(body),
    }
    return {"type": "message", "attachments": [{"contentType": CARD_TYPE, "content": card}]}


def event_card(summary: Summary) -> dict[str, Any]:
    """The card of one event, cut to fit within :data:`MAX_PAYLOAD_BYTES`."""
    head = _block(escape(summary.title), weight="Bolder", size="Medium")
    foot = _block(escape(f"{summary.timestamp} · {summary.event_id}"), isSubtle=True, size="Small")
    body_limit = MAX_BODY
    while True:
        parts: list[Mapping[str, Any]] = [head]
        if summary.body:
            parts.append(_block(escape(_cut(summary.body, body_limit))))
        parts += [_facts(summary.facts), foot]
        card = message(parts)
        if len(encode(card)) <= MAX_PAYLOAD_BYTES or body_limit == 0:
            return card
        body_limit //= 2


def digest_card(digest: DigestSummary) -> dict[str, Any]:
    """One card for a burst: counts, then the newest events while they fit."""
    parts: list[Mapping[str, Any]] = [
        _block(escape(digest.title), weight="Bolder", size="Medium"),
        _facts([(title, str(n)) for title, n in digest.counts]),
    ]
    size = len(encode(message(parts)))
    shown = 0
    for summary in digest.newest:
        line = f"**{escape(summary.title)}** · {escape(summary.session_sid)} · "
        line += escape(summary.timestamp)
        if summary.body:
            line += " · " + escape(_cut(summary.body, DIGEST_EXCERPT))
        block = _block(line, spacing="Small")
        grown = len(encode(block)) + 1
        if size + grown > MAX_PAYLOAD_BYTES - _MARGIN:
            break
        parts.append(block)
        size += grown
        shown += 1
    if shown < len(digest.newest):
        more = len(digest.newest) - shown
        parts.append(_block(f"… and {more} more", isSubtle=True))
    return message(parts)


class TeamsSink(ChatWebhookSink):
    """Deliver events to one Teams Workflows webhook."""

    kind = "teams"
    post_interval_seconds = POST_INTERVAL_SECONDS

    async def send(self, event: Event) -> None:
        """Post the card of ``event``."""
        await self._post(event_card(summarize(event, include_data=self.include_data)))

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Post ONE card summarising ``events``."""
        await self._post(digest_card(summarize_digest(events, include_data=self.include_data)))

    async def _post(self, payload: Mapping[str, Any]) -> None:
        answer = await self._poster.post(self._url, payload)
        status = answer.status_code
        if answer.is_success:
            count_delivered(self.name)
            return
        wait = retry_after(answer.headers, time.time())
        if classify(status) is StatusClass.RATE_LIMITED:
            self._poster.hold_off(1.0 if wait is None else wait)
        verdict = http_verdict(status, ANSWERS)
        raise failure(
            "teams", self.name, f"HTTP {status}", verdict, status=status, retry_after=wait
        )
