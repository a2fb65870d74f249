"""Templates of the webhook and email sinks (webhook bodies, email subjects).

They compile in the one bounded sandbox of :mod:`poller.sinks.templates`: their ``render()``
keeps its bounds on size, work and time, as a Slack template's does.
"""

from __future__ import annotations

import json
from typing import Any

import jinja2

from poller.events import Event
from poller.sinks.templates import compile_template


def compile_sandboxed(source: str) -> jinja2.Template:
    """Compile ``source``; raise ``jinja2.TemplateSyntaxError`` when it is not a template."""
    return compile_template(source)


def body_context(event: Event, *, include_data: bool) -> dict[str, Any]:
    """What a webhook ``body_template`` sees: ``event`` (the contract body) and ``event_id``."""
    return {"event": event.payload(include_data=include_data), "event_id": event.id}


def render_json_body(template: jinja2.Template, event: Event, *, include_data: bool) -> str:
    """Render a webhook body; raise ``ValueError`` unless it is one JSON value."""
    text = template.render(body_context(event, include_data=include_data))
    json.loads(text)
    return text
