"""A user's Jinja2 template for Slack messages: its variables, its checks, its rendering.

Templates run in :mod:`poller.sinks.templates` (the bounded sandbox), in a worker thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jinja2.exceptions import SecurityError

from poller.events import Event, EventType
from poller.sinks.samples import sample_event
from poller.sinks.slack_blocks import (
    MAX_FALLBACK_TEXT,
    MAX_SECTION_TEXT,
    Message,
    context,
    escape,
    fit,
    section_block,
    title,
    verbatim,
)
from poller.sinks.templates import (
    compile_template,
    failure_reason,
    render,
    render_in_thread,
)

# Slack's own limit on a message's text: rendering stops past it.
MAX_OUTPUT = 40_000
_SAMPLE_TIME = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class TemplateRenderedNothing(ValueError):
    """The template rendered only whitespace."""

    reason = "empty"


class MessageTemplate:
    """A user's Jinja2 template for the message text, rendered in the bounded sandbox.

    Every variable from Twilio is escaped for mrkdwn *before* rendering and the output is used as
    it is, so values never ping or link while the template's own text may (``<!here>``).
    Variables: ``event`` (``type``, ``id``, ``timestamp``), ``interaction`` (the raw record,
    without ``data`` when ``include_data`` is false; empty for session events), ``session`` (the
    raw Session of a session event, else None), ``body``, ``duration``, ``changes``
    (``{field: [old, new]}``), ``session_sid``, ``service_sid``, ``title``; absent ones are None.
    """

    def __init__(self, source: str) -> None:
        """Compile ``source``; raise ``jinja2.TemplateSyntaxError`` when it is not a template."""
        self._template = compile_template(source)

    def check(self) -> None:
        """Render against a sample event of each type, with the run-time bounds.

        Raise ValueError (one line) when a bound is hit on any sample, or when no sample renders.
        """
        failures: list[str] = []
        samples = sample_events()
        for event in samples:
            try:
                self._text(event)
            except SecurityError as exc:
                raise ValueError(_why(event, exc)) from None
            except Exception as exc:  # a user's template may raise anything
                failures.append(_why(event, exc))
        if len(failures) == len(samples):
            raise ValueError(failures[0])

    async def render(self, event: Event, *, include_data: bool) -> Message:
        """Return the message, rendered off the event loop; raise whatever the template raises,
        :class:`~poller.sinks.templates.TemplateLimitError` past a bound, or
        :class:`TemplateRenderedNothing`."""
        variables = template_variables(event, include_data=include_data)
        text = await render_in_thread(self._template, variables, max_output=MAX_OUTPUT)
        return _message(text, event)

    def _text(self, event: Event) -> str:
        variables = template_variables(event, include_data=True)
        text = render(self._template, variables, max_output=MAX_OUTPUT)
        _message(text, event)
        return text


def _message(text: str, event: Event) -> Message:
    if not text.strip():
        raise TemplateRenderedNothing("the template rendered nothing")
    return {
        "text": fit(text, MAX_FALLBACK_TEXT, verbatim),
        "blocks": [section_block(fit(text, MAX_SECTION_TEXT, verbatim)), context(event)],
    }


def _why(event: Event, exc: Exception) -> str:
    detail = " ".join(str(exc).split())[:160] or type(exc).__name__
    return f"on a sample {event.type.value} event it failed ({failure_reason(exc)}): {detail}"


def sample_events() -> list[Event]:
    """Return one sample event of each type (the sample message, then a status change of it)."""
    created = sample_event(_SAMPLE_TIME)
    interaction = {**created.interaction, "outbound_resource_status": "delivered"}
    updated = dataclasses.replace(
        created,
        id="evt_" + "0" * 32,
        type=EventType.UPDATED,
        interaction=interaction,
        changes={"outbound_resource_status": ("sent", "delivered")},
    )
    return [created, updated]


def template_variables(event: Event, *, include_data: bool) -> dict[str, Any]:
    """Return the variables of a :class:`MessageTemplate`, every value from Twilio escaped."""
    interaction = dict(event.interaction)
    if not include_data:
        interaction.pop("data", None)
    body = event.message_text() if include_data else None
    seconds = event.call_duration() if include_data else None
    changes = (
        None
        if event.changes is None
        else {key: [old, new] for key, (old, new) in event.changes.items()}
    )
    return {
        "event": {"type": event.type.value, "id": event.id, "timestamp": _escaped(event.timestamp)},
        "interaction": _escaped(interaction),
        "body": _escaped(body),
        "duration": _escaped(seconds),
        "changes": _escaped(changes),
        "session": None if event.session is None else _escaped(dict(event.session)),
        "session_sid": _escaped(event.session_sid),
        "service_sid": _escaped(event.service_sid),
        "title": title(event),
    }


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, Mapping):
        return {escape(key): _escaped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(item) for item in value]
    return value
