"""A fake Discord webhook on 127.0.0.1 that enforces Discord's message limits and rate limit.

``POST /api/webhooks/<id>/<token>`` (one registered webhook, :data:`WEBHOOK_PATH`):

- a message breaking a limit (:func:`limit_problem`: content 2,000, 10 embeds, title 256,
  description 4,096, 25 fields, field name 256 / value 1,024, footer 2,048, author 256,
  6,000 characters across embeds) answers ``400 {"code": 50035, "message": "Invalid Form
  Body", ...}``;
- every answer carries ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset``, ``-Reset-After`` and
  ``-Bucket``; a post beyond :attr:`FakeDiscord.limit` within ``window`` seconds answers
  ``429 {"message": "You are being rate limited.", "retry_after": <s>, "global": false}``;
- an unknown webhook answers ``404 {"message": "Unknown Webhook", "code": 10015}``;
- accepted posts answer ``200`` with a message object (``?wait=true``) or ``204``.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tests.fake_server import FakeServer

WEBHOOK_PATH = "/api/webhooks/123456789012345678/fake-discord-webhook-token-0001"
LIMITS = {
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


def _embed_problem(embed: Any, where: str) -> tuple[str | None, int]:
    if not isinstance(embed, dict):
        return f"{where}: expected an object", 0
    total = 0
    for key, limit in (("title", "title"), ("description", "description")):
        text = embed.get(key, "")
        if not isinstance(text, str) or len(text) > LIMITS[limit]:
            return f"{where}.{key}: at most {LIMITS[limit]} characters", 0
        total += len(text)
    for key, inner, limit in (("footer", "text", "footer"), ("author", "name", "author")):
        text = embed.get(key, {}).get(inner, "")
        if len(text) > LIMITS[limit]:
            return f"{where}.{key}.{inner}: at most {LIMITS[limit]} characters", 0
        total += len(text)
    fields = embed.get("fields", [])
    if not isinstance(fields, list) or len(fields) > LIMITS["fields"]:
        return f"{where}.fields: at most {LIMITS['fields']}", 0
    for i, item in enumerate(fields):
        name, value = item.get("name", ""), item.get("value", "")
        if not 1 <= len(name) <= LIMITS["field_name"]:
            return f"{where}.fields[{i}].name: 1 to {LIMITS['field_name']} characters", 0
        if not 1 <= len(value) <= LIMITS["field_value"]:
            return f"{where}.fields[{i}].value: 1 to {LIMITS['field_value']} characters", 0
        total += len(name) + len(value)
    return None, total


def limit_problem(payload: Any) -> str | None:
    """Why Discord would answer 50035 to ``payload``, or None when it is a valid message."""
    if not isinstance(payload, dict):
        return "expected a JSON object"
    content = payload.get("content", "")
    if not isinstance(content, str) or len(content) > LIMITS["content"]:
        return f"content: at most {LIMITS['content']} characters"
    embeds = payload.get("embeds", [])
    if not isinstance(embeds, list) or len(embeds) > LIMITS["embeds"]:
        return f"embeds: at most {LIMITS['embeds']}"
    if not content and not embeds:
        return "content or embeds: a message cannot be empty"
    total = 0
    for index, embed in enumerate(embeds):
        problem, length = _embed_problem(embed, f"embeds[{index}]")
        if problem:
            return problem
        total += length
    if total > LIMITS["total"]:
        return f"embeds: at most {LIMITS['total']} characters in total"
    return None


class FakeDiscord(FakeServer):
    """See the module docstring."""

    def __init__(self, *, limit: int = 5, window: float = 2.0) -> None:
        super().__init__()
        self.limit = limit
        self.window = window
        self._posts: deque[float] = deque()
        self._ids = iter(range(1, 1_000_000))

    @property
    def webhook_url(self) -> str:
        return self.base_url + WEBHOOK_PATH

    def messages(self) -> list[dict[str, Any]]:
        """The messages accepted, in order."""
        return [r.payload for r in self.accepted]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/webhooks/{id}/{token}", self._post)

    def _rate_headers(self, now: float) -> dict[str, str]:
        while self._posts and now - self._posts[0] >= self.window:
            self._posts.popleft()
        reset_after = self.window - (now - self._posts[0]) if self._posts else self.window
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.limit - len(self._posts), 0)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": "fakebucket0001",
        }

    async def _post(self, request: web.Request) -> web.Response:
        raw, payload, scripted = await self.take(request)
        if scripted is not None:
            return scripted
        if request.path != WEBHOOK_PATH:
            body = _error(10015, "Unknown Webhook")
            return self.answer(request, raw, payload, 404, "unknown webhook", body=body)
        problem = limit_problem(payload)
        if problem:
            errors = {"message": "Invalid Form Body", "code": 50035, "errors": {"_": problem}}
            return self.answer(request, raw, payload, 400, problem, body=json.dumps(errors))
        now = time.monotonic()
        headers = self._rate_headers(now)
        if len(self._posts) >= self.limit:
            retry = round(self.window - (now - self._posts[0]), 3)
            body = json.dumps(
                {"message": "You are being rate limited.", "retry_after": retry, "global": False}
            )
            headers |= {"Retry-After": str(max(int(retry + 0.999), 1)), "X-RateLimit-Scope": "user"}
            return self.answer(
                request, raw, payload, 429, "rate limited", body=body, headers=headers
            )
        self._posts.append(now)
        headers = self._rate_headers(now)
        if request.query.get("wait") == "true":
            body = json.dumps({"id": str(next(self._ids)), "webhook_id": "123456789012345678"})
            return self.answer(request, raw, payload, 200, "accepted", body=body, headers=headers)
        return self.answer(request, raw, payload, 204, "accepted", headers=headers)


def _error(code: int, message: str) -> str:
    return json.dumps({"message": message, "code": code})


def rate_limited_body(retry_after: float) -> str:
    return json.dumps(
        {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
    )


def discord_headers(remaining: int, reset_after: float) -> Mapping[str, str]:
    """Rate-limit headers to script an answer with."""
    return {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset-After": str(reset_after),
    }
