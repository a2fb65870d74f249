"""Checks of the new sinks' templates against sample events, when the config loads."""

from __future__ import annotations

import json
from collections.abc import Sequence

from poller.config.messages import _NO_VALUE, _invalid


def check_body_template(source: str, events: Sequence[str], *, include_data: bool) -> None:
    """Raise a config error unless ``source`` renders JSON for a sample of every event type."""
    from poller.sinks.samples import sample_events
    from poller.sinks.templating import compile_sandboxed, render_json_body

    template = compile_sandboxed(source)
    for event in sample_events(events):
        try:
            render_json_body(template, event, include_data=include_data)
        except ValueError as exc:
            problem = type(exc).__name__
            if isinstance(exc, json.JSONDecodeError):
                problem = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
            raise _invalid(
                f"expected a template rendering JSON; for a sample {event.type} event: {problem}",
                at=("body_template",),
                got=_NO_VALUE,
            ) from None
        except Exception as exc:  # a user's template may raise anything
            raise _invalid(
                f"expected a template that renders a sample {event.type} event: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
                at=("body_template",),
                got=_NO_VALUE,
            ) from None
