"""The Discord sink: one embed per event, or one digest embed for a burst, mentions disabled.

Messages go to a Discord webhook (``POST {webhook_url}?wait=true``) within Discord's limits
(:data:`LIMITS`), with ``allowed_mentions: {"parse": []}`` so nothing in a message can ping
anyone, and every value from Twilio escaped for Discord's markdown (:func:`escape`): a body
holding ``@everyone``, ``<@123>`` or ``[x](http://evil)`` shows those characters.

Rate limits: Discord's ``X-RateLimit-Remaining: 0`` holds the next post back for
``X-RateLimit-Reset-After`` seconds; a 429 holds it back for the ``retry_after`` (seconds, a
float) of its JSON body, else its ``Retry-After`` header.

How an answer is classified (the dispatcher decides what happens next):

    2xx                           success
    429                           retry, after Discord's ``retry_after``
    5xx, 408, 3xx (never followed)  retry
    timeout, transport failure    retry
    400 (50035 Invalid Form Body) permanent: Discord refused the message
    403                           permanent: the webhook may not post there
    413                           permanent: the message is too large
    401 (50027 Invalid Webhook Token)  disabled: copy the webhook URL again
    404 (10015 Unknown Webhook)   disabled: the webhook was deleted
    410                           disabled (Gone)
    other 4xx                     permanent
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from poller.events import Event
from poller.http.body import Answer
from poller.http.status import MAX_RETRY_AFTER_SECONDS, StatusClass, classify, retry_after
from poller.sinks.answers import Verdict, count_delivered, failure, http_verdict
from poller.sinks.jsonpost import ChatWebhookSink
from poller.sinks.render import DigestSummary, Summary, summarize, summarize_digest
from poller.twilio.records import parse_time

LIMITS: Mapping[str, int] = {
    "content": 2000,
    "embeds": 10,
    "title": 256,
    "description": 4096,
    "fields": 25,
    "field_name": 256,
    "field_value": 1024,
    "footer": 2048,
    "author": 256,
    "total": 6000,
}
# Our own cap: Discord allows 4,096, a readable event says less.
MAX_BODY = 2000
DIGEST_EXCERPT = 120
COLOR = 0xF22F46  # Twilio red
NO_MENTIONS: Mapping[str, Any] = {"parse": []}

ANSWERS: Mapping[int, Verdict] = {
    400: ("permanent", "Discord refused the message; it is dead-lettered"),
    403: ("permanent", "the webhook may not post in its channel; it is dead-lettered"),
    413: ("permanent", "the message is larger than Discord takes; it is dead-lettered"),
    401: ("disabled", "Discord refused the webhook token; copy the webhook URL again"),
    404: ("disabled", "the webhook was deleted; create a new one"),
    429: ("retry", "Discord rate-limits this webhook; the message waits its turn"),
}

_MARKDOWN = re.compile(r"([\\`*_~|>#\-\[\]()<:])")


def escape(text: str) -> str:
    """Return ``text`` so that Discord shows it literally: no markdown, link or mention."""
    return _MARKDOWN.sub(r"\\\1", text).replace("@", "@\u200b")


def _cut(text: str, limit: int) -> str:
    """Return ``text`` within ``limit`` characters, with a marker when cut."""
    if len(text) <= limit:
        return text
    marker = f"… ({len(text)} characters, cut)"
    return text[: max(limit - len(marker), 0)] + marker


def embed_length(embed: Mapping[str, Any]) -> int:
    """The characters Discord counts toward the 6,000 of a message's embeds."""
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    total += len(embed.get("footer", {}).get("text", ""))
    total += len(embed.get("author", {}).get("name", ""))
    for item in embed.get("fields", []):
        total += len(item["name"]) + len(item["value"])
    return total


def _fields(facts: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {
            "name": _cut(escape(name), LIMITS["field_name"]),
            "value": _cut(escape(value), LIMITS["field_value"]),
            "inline": True,
        }
        for name, value in facts[: LIMITS["fields"]]
    ]


def event_embed(summary: Summary) -> dict[str, Any]:
    """The embed of one event: every per-embed limit kept, fields added while the 6,000 allow."""
    embed: dict[str, Any] = {
        "title": _cut(escape(summary.title), LIMITS["title"]),
        "color": COLOR,
        "footer": {"text": _cut(escape(summary.event_id), LIMITS["footer"])},
    }
    if parse_time(summary.timestamp) is not None:  # Discord refuses a timestamp it cannot read
        embed["timestamp"] = summary.timestamp
    if summary.body:
        embed["description"] = _cut(escape(summary.body), MAX_BODY)
    fields: list[dict[str, Any]] = []
    used = embed_length(embed)
    for item in _fields(summary.facts):
        grown = len(item["name"]) + len(item["value"])
        if used + grown > LIMITS["total"]:
            break
        fields.append(item)
        used += grown
    embed["fields"] = fields
    return embed


def digest_embed(digest: DigestSummary) -> dict[str, Any]:
    """One embed for a burst: counts as fields, the newest events as lines while they fit."""
    embed: dict[str, Any] = {
        "title": _cut(escape(digest.title), LIMITS["title"]),
        "color": COLOR,
        "fields": _fields([(title, str(n)) for title, n in digest.counts]),
        "footer": {"text": "twilio-proxy-poller digest"},
    }
    budget = min(LIMITS["description"], LIMITS["total"] - embed_length(embed)) - 40
    lines: list[str] = []
    used = 0
    for summary in digest.newest:
        line = f"**{escape(summary.title)}** · {escape(summary.session_sid)} · {summary.timestamp}"
        if summary.body:
            line += " · " + escape(_cut(summary.body, DIGEST_EXCERPT))
        if used + len(line) + 1 > budget:
            break
        lines.append(line)
        used += len(line) + 1
    if len(lines) < len(digest.newest):
        lines.append(f"… and {len(digest.newest) - len(lines)} more")
    embed["description"] = "\n".join(lines)
    return embed


def message(embeds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The webhook body: embeds only, and no mention may ever ping."""
    return {"embeds": list(embeds), "allowed_mentions": dict(NO_MENTIONS)}


class DiscordSink(ChatWebhookSink):
    """Deliver events to one Discord webhook."""

    kind = "discord"
    post_interval_seconds = 0.0  # Discord says how fast through its rate-limit headers

    async def send(self, event: Event) -> None:
        """Post the embed of ``event``."""
        await self._post(message([event_embed(summarize(event, include_data=self.include_data))]))

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Post ONE message summarising ``events``."""
        digest = summarize_digest(events, include_data=self.include_data)
        await self._post(message([digest_embed(digest)]))

    async def _post(self, payload: Mapping[str, Any]) -> None:
        answer = await self._poster.post(self._url, payload, params={"wait": "true"})
        self._pace(answer)
        status = answer.status_code
        if answer.is_success:
            count_delivered(self.name)
            return
        wait = _retry_after(answer)
        if classify(status) is StatusClass.RATE_LIMITED:
            self._poster.hold_off(1.0 if wait is None else wait)
        code = answer.json_object().get("code")
        label = f"HTTP {status}"
        if isinstance(code, int) and not isinstance(code, bool):
            label += f" code {code}"
        verdict = http_verdict(status, ANSWERS)
        raise failure("discord", self.name, label, verdict, status=status, retry_after=wait)

    def _pace(self, answer: Answer) -> None:
        if answer.headers.get("x-ratelimit-remaining") != "0":
            return
        reset_after = _seconds(answer.headers.get("x-ratelimit-reset-after"))
        if reset_after is not None:
            self._poster.hold_off(reset_after)


def _seconds(value: object) -> float | None:
    try:
        seconds = float(str(value))
    except ValueError:
        return None
    if not (math.isfinite(seconds) and seconds >= 0):
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def _retry_after(answer: Answer) -> float | None:
    """Discord's ``retry_after`` (JSON, seconds), else the ``Retry-After`` header."""
    body = answer.json_object().get("retry_after")
    if isinstance(body, int | float) and not isinstance(body, bool):
        seconds = _seconds(body)
        if seconds is not None:
            return seconds
    return retry_after(answer.headers, time.time())
