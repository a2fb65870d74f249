"""The one sandbox that the new sinks' templates (email subjects, webhook bodies) run in.

A plain :class:`jinja2.sandbox.SandboxedEnvironment` with undefined names as errors; kept
behind :func:`compile_sandboxed` so that a hardened sandbox can replace it in one place.
"""

from __future__ import annotations

import json
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from poller.events import Event

_ENVIRONMENT = SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)


def compile_sandboxed(source: str) -> jinja2.Template:
    """Compile ``source``; raise ``jinja2.TemplateSyntaxError`` when it is not a template."""
    return _ENVIRONMENT.from_string(source)


def body_context(event: Event, *, include_data: bool) -> dict[str, Any]:
    """What a webhook ``body_template`` sees: ``event`` (the contract body) and ``event_id``."""
    return {"event": event.payload(include_data=include_data), "event_id": event.id}


def render_json_body(template: jinja2.Template, event: Event, *, include_data: bool) -> str:
    """Render a webhook body; raise ``ValueError`` unless it is one JSON value."""
    text = template.render(body_context(event, include_data=include_data))
    json.loads(text)
    return text
