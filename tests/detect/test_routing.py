"""Routing: a sink's `events` and `filter` decide which events it takes."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poller.detect.routing import accepts, route, route_stored
from poller.events import INTERACTION_EVENT_TYPES, Event, EventType

FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "interaction_fetch.json").read_text()
)
SERVICE = FIXTURE["service_sid"]
SESSION = FIXTURE["session_sid"]
BOTH = tuple(INTERACTION_EVENT_TYPES)
FILTER_KEYS = (
    "type",
    "inbound_resource_status",
    "outbound_resource_status",
    "service_sid",
    "session_sid",
)


@dataclass(frozen=True)
class Filter:
    type: tuple[str, ...] | None = None
    inbound_resource_status: tuple[str, ...] | None = None
    outbound_resource_status: tuple[str, ...] | None = None
    service_sid: tuple[str, ...] | None = None
    session_sid: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Sink:
    name: str
    events: tuple[str, ...] = BOTH
    filter: Filter | None = None


def _event(
    event_type: EventType = EventType.CREATED,
    *,
    service_sid: str = SERVICE,
    session_sid: str = SESSION,
    **fields: Any,
) -> Event:
    return Event(
        id="evt_" + "0" * 32,
        type=event_type,
        service_sid=service_sid,
        session_sid=session_sid,
        interaction_sid=FIXTURE["sid"],
        interaction={**FIXTURE, **fields},
        timestamp="2015-07-30T20:00:00Z",
    )


def _values(event: Event) -> dict[str, str]:
    """The value of each filter key for the event (the fixture has them all)."""
    return {
        "type": event.interaction["type"],
        "inbound_resource_status": event.interaction["inbound_resource_status"],
        "outbound_resource_status": event.interaction["outbound_resource_status"],
        "service_sid": event.service_sid,
        "session_sid": event.session_sid,
    }


@pytest.mark.parametrize("event_type", [EventType.CREATED, EventType.UPDATED])
def test_sink_without_filter_takes_every_event_type_it_lists(event_type: EventType) -> None:
    assert accepts(Sink("all"), _event(event_type))


def test_sink_listing_only_created_refuses_updated() -> None:
    sink = Sink("new", events=("interaction.created",))
    assert accepts(sink, _event(EventType.CREATED))
    assert not accepts(sink, _event(EventType.UPDATED))


def test_sink_listing_no_event_type_takes_nothing() -> None:
    assert not accepts(Sink("none", events=()), _event())


def test_event_type_filter_applies_before_a_matching_filter() -> None:
    sink = Sink("new", events=("interaction.updated",), filter=Filter(type=("message",)))
    assert not accepts(sink, _event(EventType.CREATED))


@pytest.mark.parametrize("key", FILTER_KEYS)
def test_each_filter_key_takes_its_value_and_refuses_another(key: str) -> None:
    event = _event()
    value = _values(event)[key]
    assert accepts(Sink("s", filter=Filter(**{key: (value,)})), event)
    assert not accepts(Sink("s", filter=Filter(**{key: (value + "-other",)})), event)


@pytest.mark.parametrize("key", FILTER_KEYS)
def test_filter_key_list_means_any_of(key: str) -> None:
    event = _event()
    value = _values(event)[key]
    assert accepts(Sink("s", filter=Filter(**{key: ("first", value, "last")})), event)
    assert not accepts(Sink("s", filter=Filter(**{key: ("first", "last")})), event)


@pytest.mark.parametrize("key", FILTER_KEYS)
def test_empty_filter_list_takes_nothing(key: str) -> None:
    assert not accepts(Sink("s", filter=Filter(**{key: ()})), _event())


def test_filter_with_every_key_none_takes_everything() -> None:
    assert accepts(Sink("s", filter=Filter()), _event(outbound_resource_status=None))


def test_every_filter_key_must_match() -> None:
    event = _event()
    values = _values(event)
    everything = Filter(**{key: (value,) for key, value in values.items()})
    assert accepts(Sink("s", filter=everything), event)
    for key in FILTER_KEYS:
        one_off = replace(everything, **{key: ("nope",)})
        assert not accepts(Sink("s", filter=one_off), event), key


@pytest.mark.parametrize("key", ["type", "inbound_resource_status", "outbound_resource_status"])
@pytest.mark.parametrize("missing", [None, 7, "absent"], ids=["null", "not-a-string", "absent"])
def test_null_or_missing_record_field_never_matches_a_filter(key: str, missing: object) -> None:
    fields: dict[str, Any] = {key: missing}
    event = _event(**fields)
    if missing == "absent":
        event = replace(event, interaction={k: v for k, v in FIXTURE.items() if k != key})
    assert not accepts(Sink("s", filter=Filter(**{key: ("sent", "message", "7", "absent")})), event)
    assert accepts(Sink("s", filter=Filter(**{key: None})), event)


def test_status_filter_reads_the_right_end() -> None:
    event = _event(inbound_resource_status="received", outbound_resource_status="failed")
    failed_out = Sink("s", filter=Filter(outbound_resource_status=("failed", "undelivered")))
    failed_in = Sink("s", filter=Filter(inbound_resource_status=("failed", "undelivered")))
    assert accepts(failed_out, event)
    assert not accepts(failed_in, event)


def test_sid_filters_compare_with_the_polled_session_not_the_record() -> None:
    event = _event(service_sid="KS" + "1" * 32, session_sid="KC" + "2" * 32)
    assert accepts(Sink("s", filter=Filter(service_sid=("KS" + "1" * 32,))), event)
    assert accepts(Sink("s", filter=Filter(session_sid=("KC" + "2" * 32,))), event)
    assert not accepts(Sink("s", filter=Filter(service_sid=(SERVICE,))), event)
    assert not accepts(Sink("s", filter=Filter(session_sid=(SESSION,))), event)


def test_route_names_every_sink_that_takes_the_event_in_config_order() -> None:
    sinks = [
        Sink("ops"),
        Sink("new-only", events=("interaction.created",)),
        Sink("failures", filter=Filter(type=("message",), outbound_resource_status=("failed",))),
        Sink("messages", filter=Filter(type=("message",))),
        Sink("calls", filter=Filter(type=("voice",))),
    ]
    failed = _event(EventType.UPDATED, outbound_resource_status="failed")
    assert route(sinks, failed) == ["ops", "failures", "messages"]
    assert route(sinks, _event(EventType.CREATED)) == ["ops", "new-only", "messages"]
    assert route(sinks, _event(EventType.UPDATED, type="voice")) == ["ops", "calls"]


def test_route_with_no_taker_is_empty() -> None:
    assert route([], _event()) == []
    assert route([Sink("calls", filter=Filter(type=("voice",)))], _event()) == []


statuses = st.sampled_from([None, "sent", "failed", "delivered", "new-status"])
wanted = st.sampled_from(["sent", "failed", "delivered", "new-status", "message", "voice", SERVICE])
filter_values = st.none() | st.lists(wanted, max_size=3).map(tuple)


@settings(max_examples=200, deadline=None)
@given(
    event_type=st.sampled_from(EventType),
    inbound=statuses,
    outbound=statuses,
    base=st.builds(
        Filter,
        type=filter_values,
        inbound_resource_status=filter_values,
        outbound_resource_status=filter_values,
        service_sid=filter_values,
    ),
    key=st.sampled_from(FILTER_KEYS),
    narrower=filter_values,
)
def test_restricting_a_filter_key_never_adds_an_event(
    event_type: EventType,
    inbound: str | None,
    outbound: str | None,
    base: Filter,
    key: str,
    narrower: tuple[str, ...] | None,
) -> None:
    event = _event(event_type, inbound_resource_status=inbound, outbound_resource_status=outbound)
    current = getattr(base, key)
    if current is None:
        restricted = narrower
    elif narrower is None:
        restricted = current
    else:
        restricted = tuple(v for v in current if v in narrower)
    if accepts(Sink("s", filter=replace(base, **{key: restricted})), event):
        assert accepts(Sink("s", filter=base), event)


@dataclass(frozen=True)
class StoredSink(Sink):
    include_data: bool = True


def test_an_event_no_taker_wants_the_body_of_is_stored_without_it_under_the_same_id() -> None:
    event = _event()
    bare, names = route_stored(
        [StoredSink("a", include_data=False), StoredSink("b", include_data=False)], event
    )
    assert names == ["a", "b"]
    assert "data" not in bare.interaction
    assert bare.id == event.id
    assert {**bare.interaction, "data": event.interaction["data"]} == dict(event.interaction)
    assert "some message" not in bare.to_json()


def test_one_taker_that_includes_the_body_keeps_it_stored() -> None:
    event = _event()
    quiet = StoredSink("quiet", include_data=False)
    assert route_stored([quiet, StoredSink("full")], event) == (event, ["quiet", "full"])


def test_a_sink_that_does_not_take_the_event_has_no_say_in_what_is_stored() -> None:
    event = _event()
    elsewhere = StoredSink("full", events=("interaction.updated",))
    bare, names = route_stored([StoredSink("quiet", include_data=False), elsewhere], event)
    assert names == ["quiet"]
    assert "data" not in bare.interaction
