"""Routing: which sink takes which event. Pure.

A sink takes an event when the event's type is in its ``events`` and every key of its ``filter``
matches. A filter key that is None matches anything; a tuple matches when the value is one of
its items, so an empty tuple matches nothing and a null value in the record matches no tuple.
``type`` and the status keys are compared with the interaction's raw fields, ``service_sid`` and
``session_sid`` with the session the event was polled from. Session events have no interaction:
only ``service_sid`` and ``session_sid`` apply to them (a sink opts in to them by naming them in
``events``).

What is stored follows too (:func:`route_stored`): an event whose every sink leaves the message
body out (``include_data: false``) is stored without ``interaction.data``, so the body is kept
nowhere, neither in the outbox nor in the history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from poller.events import Event


class FilterLike(Protocol):
    """The ``filter`` of a sink (``poller.config.SinkFilter``)."""

    @property
    def type(self) -> tuple[str, ...] | None: ...

    @property
    def inbound_resource_status(self) -> tuple[str, ...] | None: ...

    @property
    def outbound_resource_status(self) -> tuple[str, ...] | None: ...

    @property
    def service_sid(self) -> tuple[str, ...] | None: ...

    @property
    def session_sid(self) -> tuple[str, ...] | None: ...


class SinkRouting(Protocol):
    """What routing needs of a sink's configuration."""

    @property
    def events(self) -> tuple[str, ...]: ...

    @property
    def filter(self) -> FilterLike | None: ...


class NamedSinkRouting(SinkRouting, Protocol):
    """A sink's routing configuration with the sink's name."""

    @property
    def name(self) -> str: ...


def accepts(sink: SinkRouting, event: Event) -> bool:
    """Return True when the sink takes the event (its ``events`` and its ``filter``)."""
    if event.type not in sink.events:
        return False
    rules = sink.filter
    if rules is None:
        return True
    where = _matches(rules.service_sid, event.service_sid) and _matches(
        rules.session_sid, event.session_sid
    )
    if event.is_session_event:
        return where
    interaction = event.interaction
    return (
        where
        and _matches(rules.type, _text(interaction, "type"))
        and _matches(rules.inbound_resource_status, _text(interaction, "inbound_resource_status"))
        and _matches(rules.outbound_resource_status, _text(interaction, "outbound_resource_status"))
    )


def route(sinks: Sequence[NamedSinkRouting], event: Event) -> list[str]:
    """Return the names of the sinks that take the event, in the order of ``sinks``."""
    return [sink.name for sink in sinks if accepts(sink, event)]


class StoredSinkRouting(NamedSinkRouting, Protocol):
    """A sink's routing configuration with what it takes of the message body."""

    @property
    def include_data(self) -> bool: ...


def route_stored(sinks: Sequence[StoredSinkRouting], event: Event) -> tuple[Event, list[str]]:
    """Return the event as the state is to keep it, and the names of the sinks that take it.

    Without ``interaction.data`` when none of those sinks includes it; the id is the same.
    """
    taking = [sink for sink in sinks if accepts(sink, event)]
    names = [sink.name for sink in taking]
    if not taking or any(sink.include_data for sink in taking) or "data" not in event.interaction:
        return event, names
    bare = {key: value for key, value in event.interaction.items() if key != "data"}
    return replace(event, interaction=bare), names


def _matches(allowed: tuple[str, ...] | None, value: str | None) -> bool:
    return allowed is None or (value is not None and value in allowed)


def _text(interaction: Mapping[str, Any], key: str) -> str | None:
    value = interaction.get(key)
    return value if isinstance(value, str) else None
