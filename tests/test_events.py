"""Events: the webhook payload of CONTRACT.md, the outbox serialisation, stable ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poller.events import EVENT_TYPES, Event, EventType, event_id
from poller.twilio.records import Fingerprint

FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).parent / "fixtures" / "interaction_fetch.json").read_text()
)
SID = FIXTURE["sid"]
SERVICE = FIXTURE["service_sid"]
SESSION = FIXTURE["session_sid"]
OLD = Fingerprint("2015-07-30T20:00:00Z", "sent", "sent")
NEW = Fingerprint("2015-07-30T20:00:05Z", "sent", "delivered")

# The body of CONTRACT.md "Webhook delivery": `changes` on interaction.updated only.
PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "timestamp", "data"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["interaction.created", "interaction.updated"]},
        "timestamp": {"type": "string"},
        "data": {
            "type": "object",
            "required": ["service_sid", "session_sid", "interaction"],
            "additionalProperties": False,
            "properties": {
                "service_sid": {"type": "string"},
                "session_sid": {"type": "string"},
                "interaction": {"type": "object"},
                "changes": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": 2,
                        "items": {"type": ["string", "null"]},
                    },
                },
            },
        },
    },
    "if": {"properties": {"type": {"const": "interaction.updated"}}},
    "then": {"properties": {"data": {"required": ["changes"]}}},
    "else": {"properties": {"data": {"not": {"required": ["changes"]}}}},
}


def _created(interaction: dict[str, Any] | None = None) -> Event:
    return Event(
        id=event_id(EventType.CREATED, SID, None, OLD),
        type=EventType.CREATED,
        service_sid=SERVICE,
        session_sid=SESSION,
        interaction_sid=SID,
        interaction=FIXTURE if interaction is None else interaction,
        timestamp="2015-07-30T20:00:00Z",
        sort_key=f"12015-07-30T20:00:00.000000+00:00 {SID}",
    )


def _updated() -> Event:
    return Event(
        id=event_id(EventType.UPDATED, SID, OLD, NEW),
        type=EventType.UPDATED,
        service_sid=SERVICE,
        session_sid=SESSION,
        interaction_sid=SID,
        interaction={**FIXTURE, "outbound_resource_status": "delivered"},
        timestamp="2015-07-30T20:00:05Z",
        changes={
            "date_updated": ("2015-07-30T20:00:00Z", "2015-07-30T20:00:05Z"),
            "outbound_resource_status": ("sent", "delivered"),
        },
        sort_key=f"12015-07-30T20:00:00.000000+00:00 {SID}",
    )


def _with_data(data: object) -> Event:
    return _created({**FIXTURE, "data": data})


def test_created_payload_is_exactly_the_contract_body_without_changes() -> None:
    payload = _created().payload()
    assert payload == {
        "type": "interaction.created",
        "timestamp": "2015-07-30T20:00:00Z",
        "data": {"service_sid": SERVICE, "session_sid": SESSION, "interaction": FIXTURE},
    }
    jsonschema.validate(payload, PAYLOAD_SCHEMA)


def test_updated_payload_carries_changes_as_old_new_pairs() -> None:
    payload = _updated().payload()
    assert payload["type"] == "interaction.updated"
    assert payload["timestamp"] == "2015-07-30T20:00:05Z"
    assert payload["data"]["changes"] == {
        "date_updated": ["2015-07-30T20:00:00Z", "2015-07-30T20:00:05Z"],
        "outbound_resource_status": ["sent", "delivered"],
    }
    jsonschema.validate(payload, PAYLOAD_SCHEMA)


def test_payload_interaction_keeps_every_twilio_field_nulls_and_order_included() -> None:
    payload = json.loads(json.dumps(_created().payload()))
    interaction = payload["data"]["interaction"]
    assert list(interaction) == list(FIXTURE)
    assert interaction == FIXTURE
    assert interaction["inbound_resource_url"] is None
    assert interaction["data"] == '{"body":"some message"}'


def test_payload_keeps_fields_twilio_adds_later() -> None:
    payload = _created({**FIXTURE, "a_new_field": {"nested": [1, None]}}).payload()
    assert payload["data"]["interaction"]["a_new_field"] == {"nested": [1, None]}


def test_include_data_false_drops_only_data_and_leaves_the_event_untouched() -> None:
    event = _updated()
    payload = event.payload(include_data=False)
    expected = {k: v for k, v in event.interaction.items() if k != "data"}
    assert payload["data"]["interaction"] == expected
    assert payload["data"]["changes"] == event.payload()["data"]["changes"]
    assert event.interaction["data"] == FIXTURE["data"]
    jsonschema.validate(payload, PAYLOAD_SCHEMA)


def test_include_data_false_accepts_an_interaction_without_data() -> None:
    bare = {k: v for k, v in FIXTURE.items() if k != "data"}
    assert _created(bare).payload(include_data=False)["data"]["interaction"] == bare


@pytest.mark.parametrize("event", [_created(), _updated()], ids=["created", "updated"])
def test_to_json_round_trips_through_from_json(event: Event) -> None:
    text = event.to_json()
    assert "\n" not in text
    back = Event.from_json(text)
    assert back == event
    assert back.sort_key == event.sort_key
    assert back.type is event.type
    assert back.payload() == event.payload()


def test_from_json_without_sort_key_defaults_to_empty() -> None:
    obj = json.loads(_created().to_json())
    del obj["sort_key"]
    assert Event.from_json(json.dumps(obj)).sort_key == ""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
optional_text = st.none() | st.text()


@settings(max_examples=100, deadline=None)
@given(
    interaction=st.dictionaries(st.text(), json_values, max_size=6),
    changes=st.none()
    | st.dictionaries(st.text(), st.tuples(optional_text, optional_text), max_size=3),
    event_type=st.sampled_from(EventType),
    text=st.text(),
)
def test_any_event_round_trips_through_json(
    interaction: dict[str, Any],
    changes: dict[str, tuple[str | None, str | None]] | None,
    event_type: EventType,
    text: str,
) -> None:
    event = Event(
        id=text,
        type=event_type,
        service_sid=text,
        session_sid=text,
        interaction_sid=text,
        interaction=interaction,
        timestamp=text,
        changes=changes,
        sort_key=text,
    )
    back = Event.from_json(event.to_json())
    assert back == event
    assert back.sort_key == event.sort_key


def test_message_text_reads_the_body_from_data() -> None:
    assert _created().message_text() == "some message"


@pytest.mark.parametrize(
    "data",
    [None, 42, {"body": "x"}, "", "{", "not json", "[1, 2]", '"body"', "{}", '{"body": null}'],
    ids=[
        "null",
        "number",
        "object",
        "empty",
        "truncated",
        "text",
        "list",
        "string",
        "no-key",
        "null-body",
    ],
)
def test_message_text_and_call_duration_are_none_for_malformed_data(data: object) -> None:
    event = _with_data(data)
    assert event.message_text() is None
    assert event.call_duration() is None


def test_message_text_is_none_without_data_field() -> None:
    bare = {k: v for k, v in FIXTURE.items() if k != "data"}
    assert _created(bare).message_text() is None


@pytest.mark.parametrize("duration", [42, "42"])
def test_call_duration_reads_number_or_string_duration(duration: object) -> None:
    event = _with_data(json.dumps({"duration": duration}))
    assert event.call_duration() == "42"
    assert event.message_text() is None


def test_event_id_is_stable_and_shaped_like_evt_hex() -> None:
    first = event_id(EventType.UPDATED, SID, OLD, NEW)
    assert first == event_id(EventType.UPDATED, SID, Fingerprint(*OLD), Fingerprint(*NEW))
    assert first.startswith("evt_")
    assert len(first) == 36
    int(first[4:], 16)


def test_event_id_differs_for_a_different_change() -> None:
    ids = {
        event_id(EventType.CREATED, SID, None, NEW),
        event_id(EventType.UPDATED, SID, OLD, NEW),
        event_id(EventType.UPDATED, SID, NEW, OLD),
        event_id(EventType.UPDATED, SID, OLD, NEW._replace(inbound_resource_status=None)),
        event_id(EventType.UPDATED, "KI" + "b" * 32, OLD, NEW),
        event_id(EventType.CREATED, "KI" + "b" * 32, None, NEW),
    }
    assert len(ids) == 6


def test_created_event_id_depends_only_on_the_interaction() -> None:
    assert event_id(EventType.CREATED, SID, None, OLD) == event_id(EventType.CREATED, SID, OLD, NEW)


def test_event_types_are_the_contract_vocabulary() -> None:
    assert EVENT_TYPES == (
        "interaction.created",
        "interaction.updated",
        "session.created",
        "session.updated",
    )
