"""A fake Teams Workflows webhook on 127.0.0.1, as strict as Teams about what it takes.

``POST /workflows/<id>`` (one registered id, :data:`WORKFLOW`): the body must be at most 28 KB
(else ``413``), a ``message`` whose one attachment is an Adaptive Card with a ``body`` list of
elements (else ``400``); mention entities (``msteams.entities``) are refused as well, since
the sink must never send them. More than :attr:`FakeTeams.limit` posts within ``window``
seconds answer ``429`` with ``Retry-After``. An unknown id answers ``404``. Accepted posts
answer ``202``, as Workflows does.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from aiohttp import web

from tests.fake_server import FakeServer

MAX_BYTES = 28 * 1024
WORKFLOW = "/workflows/wf-0001/triggers/manual/paths/invoke"
CARD = "application/vnd.microsoft.card.adaptive"


def card_problem(payload: Any) -> str | None:
    """Why Teams would refuse ``payload``, or None when it is a card message."""
    if not isinstance(payload, dict) or payload.get("type") != "message":
        return "expected a message"
    attachments = payload.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return "expected one attachment"
    attachment = attachments[0]
    if not isinstance(attachment, dict) or attachment.get("contentType") != CARD:
        return "expected an Adaptive Card attachment"
    card = attachment.get("content")
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        return "expected an AdaptiveCard"
    body = card.get("body")
    if not isinstance(body, list) or not body:
        return "expected card elements"
    if "msteams" in card:
        return "mention entities are not for this sink"
    for element in body:
        if not isinstance(element, dict) or element.get("type") not in ("TextBlock", "FactSet"):
            return "unexpected element"
        if element["type"] == "TextBlock" and not isinstance(element.get("text"), str):
            return "a TextBlock needs text"
    return None


class FakeTeams(FakeServer):
    """See the module docstring."""

    def __init__(self, *, limit: int = 4, window: float = 1.0, retry_after: str = "1") -> None:
        super().__init__()
        self.limit = limit
        self.window = window
        self.retry_after = retry_after
        self._posts: deque[float] = deque()

    @property
    def webhook_url(self) -> str:
        return self.base_url + WORKFLOW

    def cards(self) -> list[dict[str, Any]]:
        """The Adaptive Cards accepted, in order."""
        return [r.payload["attachments"][0]["content"] for r in self.accepted]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/workflows/{rest:.+}", self._post)

    async def _post(self, request: web.Request) -> web.Response:
        raw, payload, scripted = await self.take(request)
        if scripted is not None:
            return scripted
        if request.path != WORKFLOW:
            return self.answer(request, raw, payload, 404, "unknown workflow")
        if len(raw) > MAX_BYTES:
            body = json.dumps({"error": {"code": "RequestEntityTooLarge"}})
            return self.answer(request, raw, payload, 413, "too large", body=body)
        problem = card_problem(payload)
        if problem:
            body = json.dumps({"error": {"code": "InvalidRequestContent", "message": problem}})
            return self.answer(request, raw, payload, 400, problem, body=body)
        now = time.monotonic()
        while self._posts and now - self._posts[0] >= self.window:
            self._posts.popleft()
        if len(self._posts) >= self.limit:
            headers = {"Retry-After": self.retry_after}
            return self.answer(request, raw, payload, 429, "throttled", headers=headers)
        self._posts.append(now)
        return self.answer(request, raw, payload, 202, "accepted")
