"""Change detection: properties over random snapshot sequences; examples from the fixture."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poller.detect.diff import diff, sort_key
from poller.events import Event, EventType, event_id
from poller.twilio.records import FINGERPRINT_FIELDS, Fingerprint, Interaction, parse_time
from tests.detect.oracle import apply, known_after

FIXTURE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "interaction_fetch.json").read_text()
)
SERVICE = FIXTURE["service_sid"]
SESSION = FIXTURE["session_sid"]
DETECTED = "2026-11-27T10:00:00Z"

SIDS = [f"KI{c * 32}" for c in "abcde"]
STATUSES = [None, "", "queued", "sent", "delivered", "failed", "a-status-twilio-adds-later"]
# Equal instants written differently (Z, an offset, no offset) and strings that are not times.
TIMES = [
    None,
    "2015-07-30T20:00:00Z",
    "2015-07-30T21:00:00+01:00",
    "2015-07-30T20:00:00",
    "2015-07-30T20:00:01Z",
    "2016-01-01T00:00:00Z",
    "not-a-time",
    "",
]
PROPERTY = settings(max_examples=100, deadline=None)


@st.composite
def raw_interactions(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "sid": draw(st.sampled_from(SIDS)),
        "service_sid": SERVICE,
        "session_sid": SESSION,
        "type": draw(st.sampled_from([None, "message", "voice", "unknown"])),
        "data": draw(st.sampled_from([None, '{"body":"hi"}', '{"body":"bye"}'])),
        "inbound_resource_status": draw(st.sampled_from(STATUSES)),
        "outbound_resource_status": draw(st.sampled_from(STATUSES)),
        "date_created": draw(st.sampled_from(TIMES)),
        "date_updated": draw(st.sampled_from(TIMES)),
    }


def _interactions(raws: Sequence[dict[str, Any]]) -> list[Interaction]:
    records = [Interaction.from_api(raw) for raw in raws]
    assert all(record is not None for record in records)
    return [record for record in records if record is not None]


# A snapshot may list a sid twice, as paging anomalies do.
snapshots = st.lists(raw_interactions(), max_size=8).map(_interactions)
snapshot_sequences = st.lists(snapshots, min_size=1, max_size=6)


def _without_deletions(sequence: list[list[Interaction]]) -> list[list[Interaction]]:
    """Carry every record of a sid a snapshot lacks over from the snapshot before."""
    result = [sequence[0]]
    for snapshot in sequence[1:]:
        present = {it.sid for it in snapshot}
        result.append(snapshot + [it for it in result[-1] if it.sid not in present])
    return result


def _instant(value: str | None) -> datetime | None:
    parsed = parse_time(value)
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _order(event: Event) -> tuple[bool, datetime, str]:
    created = _instant(event.interaction.get("date_created"))
    return (created is not None, created or datetime.min.replace(tzinfo=UTC), event.interaction_sid)


def _fingerprint(raw: Any) -> Fingerprint:
    record = Interaction.from_api(raw)
    assert record is not None
    return record.fingerprint


def _change_key(event: Event, known: dict[str, Fingerprint]) -> tuple[object, ...]:
    new = _fingerprint(event.interaction)
    if event.type is EventType.CREATED:
        return (event.type, event.interaction_sid)
    return (event.type, event.interaction_sid, known[event.interaction_sid], new)


def _run(known: dict[str, Fingerprint], fetched: list[Interaction]) -> list[Event]:
    return diff(SERVICE, SESSION, known, fetched, DETECTED).events


@PROPERTY
@given(snapshot_sequences)
def test_replaying_events_keeps_live_sids_equal_to_fetch_and_deleted_ones_at_last_seen(
    sequence: list[list[Interaction]],
) -> None:
    replayed = known_after(sequence[0])
    last_seen = dict(replayed)
    for before, after in pairwise(sequence):
        replayed = apply(replayed, _run(known_after(before), after))
        last_seen.update(known_after(after))
    live = known_after(sequence[-1])
    assert {sid: fp for sid, fp in replayed.items() if sid in live} == live
    assert replayed == last_seen


@PROPERTY
@given(snapshot_sequences.map(_without_deletions))
def test_replaying_events_without_deletions_gives_the_last_snapshot(
    sequence: list[list[Interaction]],
) -> None:
    replayed = known_after(sequence[0])
    for before, after in pairwise(sequence):
        replayed = apply(replayed, _run(known_after(before), after))
    assert replayed == known_after(sequence[-1])


@PROPERTY
@given(snapshots, snapshots)
def test_events_are_exactly_the_new_sids_and_the_changed_fingerprints(
    previous: list[Interaction], fetched: list[Interaction]
) -> None:
    known = known_after(previous)
    latest = known_after(fetched)
    events = _run(known, fetched)
    by_sid = {event.interaction_sid: event for event in events}
    assert len(by_sid) == len(events)  # never created and updated, nor twice, for one sid
    created = {sid for sid, e in by_sid.items() if e.type is EventType.CREATED}
    updated = {sid for sid, e in by_sid.items() if e.type is EventType.UPDATED}
    assert created == latest.keys() - known.keys()
    assert updated == {sid for sid in latest.keys() & known.keys() if latest[sid] != known[sid]}
    for sid, event in by_sid.items():
        assert (event.service_sid, event.session_sid) == (SERVICE, SESSION)
        assert _fingerprint(event.interaction) == latest[sid]
        if event.type is EventType.CREATED:
            assert event.changes is None
            assert event.id == event_id(EventType.CREATED, sid, None, latest[sid])
        else:
            assert event.changes == {
                name: (old, new)
                for name, old, new in zip(FINGERPRINT_FIELDS, known[sid], latest[sid], strict=True)
                if old != new
            }
            assert event.id == event_id(EventType.UPDATED, sid, known[sid], latest[sid])


@PROPERTY
@given(snapshots, snapshots)
def test_timestamp_is_twilios_time_of_the_change_or_detected_at(
    previous: list[Interaction], fetched: list[Interaction]
) -> None:
    for event in _run(known_after(previous), fetched):
        field = "date_created" if event.type is EventType.CREATED else "date_updated"
        value = event.interaction[field]
        expected = value if _instant(value) is not None else DETECTED
        assert event.timestamp == expected


@PROPERTY
@given(snapshots, st.randoms(use_true_random=False))
def test_unchanged_snapshot_in_any_order_makes_no_event(
    fetched: list[Interaction], rng: random.Random
) -> None:
    shuffled = fetched.copy()
    rng.shuffle(shuffled)
    assert _run(known_after(fetched), shuffled) == []


@PROPERTY
@given(snapshots, snapshots, st.randoms(use_true_random=False))
def test_events_are_ordered_by_date_created_then_sid_whatever_the_list_order(
    previous: list[Interaction], fetched: list[Interaction], rng: random.Random
) -> None:
    known = known_after(previous)
    events = _run(known, fetched)
    assert events == sorted(events, key=_order)
    keys = [event.sort_key for event in events]
    assert keys == sorted(set(keys))
    shuffled = fetched.copy()
    rng.shuffle(shuffled)
    again = _run(known, shuffled)
    assert again == events
    assert [e.sort_key for e in again] == keys
    assert [e.interaction for e in again] == [e.interaction for e in events]


@PROPERTY
@given(snapshot_sequences)
def test_event_ids_are_deterministic_and_differ_exactly_when_the_change_differs(
    sequence: list[list[Interaction]],
) -> None:
    ids_by_change: dict[tuple[object, ...], str] = {}
    for before, after in pairwise(sequence):
        known = known_after(before)
        events = _run(known, after)
        assert [e.id for e in events] == [e.id for e in _run(known, after)]
        for event in events:
            key = _change_key(event, known)
            assert ids_by_change.setdefault(key, event.id) == event.id
    assert len(set(ids_by_change.values())) == len(ids_by_change)


@PROPERTY
@given(snapshots)
def test_duplicated_sid_keeps_a_record_with_the_latest_date_updated(
    fetched: list[Interaction],
) -> None:
    known = known_after(fetched)
    assert known.keys() == {it.sid for it in fetched}
    for sid, fingerprint in known.items():
        candidates = [it for it in fetched if it.sid == sid]
        assert fingerprint in [it.fingerprint for it in candidates]
        instants = [_instant(it.date_updated) for it in candidates]
        latest = max((i for i in instants if i is not None), default=None)
        assert _instant(fingerprint.date_updated) == latest


def _record(**fields: Any) -> Interaction:
    record = Interaction.from_api({**FIXTURE, **fields})
    assert record is not None
    return record


def test_new_fixture_interaction_makes_one_created_event_carrying_the_raw_record() -> None:
    record = _record()
    [event] = _run({}, [record])
    assert event.type is EventType.CREATED
    assert event.id == event_id(EventType.CREATED, FIXTURE["sid"], None, record.fingerprint)
    assert event.id.startswith("evt_")
    assert len(event.id) == 36
    assert event.interaction_sid == FIXTURE["sid"]
    assert event.interaction is record.raw
    assert event.interaction == FIXTURE
    assert event.timestamp == "2015-07-30T20:00:00Z"
    assert event.changes is None
    assert event.sort_key == f"12015-07-30T20:00:00.000000+00:00 {FIXTURE['sid']}"


def test_status_change_of_fixture_makes_updated_event_with_only_the_changed_fields() -> None:
    old = Fingerprint("2015-07-30T20:00:00Z", "sent", "queued")
    record = _record(date_updated="2015-07-30T20:00:05Z")
    [event] = _run({FIXTURE["sid"]: old}, [record])
    assert event.type is EventType.UPDATED
    assert event.changes == {
        "date_updated": ("2015-07-30T20:00:00Z", "2015-07-30T20:00:05Z"),
        "outbound_resource_status": ("queued", "sent"),
    }
    assert event.timestamp == "2015-07-30T20:00:05Z"
    assert event.id == event_id(EventType.UPDATED, FIXTURE["sid"], old, record.fingerprint)


def test_change_outside_the_fingerprint_makes_no_event() -> None:
    known = known_after([_record()])
    assert _run(known, [_record(data='{"body":"edited"}', type="voice")]) == []


def test_deleted_interaction_makes_no_event() -> None:
    known = known_after([_record()])
    assert _run(known, []) == []
    assert known_after([]) == {}


@pytest.mark.parametrize("reverse", [False, True])
def test_duplicated_sid_keeps_the_latest_date_updated_in_either_order(reverse: bool) -> None:
    older = _record(date_updated="2015-07-30T20:00:00Z", outbound_resource_status="sent")
    newer = _record(date_updated="2015-07-30T20:00:09Z", outbound_resource_status="delivered")
    fetched = [newer, older] if reverse else [older, newer]
    [event] = _run({}, fetched)
    assert event.interaction is newer.raw
    assert known_after(fetched) == {FIXTURE["sid"]: newer.fingerprint}


def test_duplicated_sid_with_equal_date_updated_is_decided_by_content_not_order() -> None:
    one = _record(outbound_resource_status="delivered")
    other = _record(outbound_resource_status="failed")
    first = _run({}, [one, other])
    second = _run({}, [other, one])
    assert [e.interaction for e in first] == [e.interaction for e in second]
    assert known_after([one, other]) == known_after([other, one])


def test_missing_or_unparseable_date_created_sorts_first_and_is_stamped_detected_at() -> None:
    dated = _record(sid="KI" + "0" * 32, date_created="2015-07-30T20:00:00Z")
    missing = _record(sid="KI" + "f" * 32, date_created=None)
    garbage = _record(sid="KI" + "e" * 32, date_created="yesterday")
    events = _run({}, [dated, missing, garbage])
    assert [e.interaction_sid for e in events] == [garbage.sid, missing.sid, dated.sid]
    assert [e.timestamp for e in events] == [DETECTED, DETECTED, "2015-07-30T20:00:00Z"]


def test_date_created_offsets_are_compared_as_instants() -> None:
    # 21:00+01:00 is 20:00Z: earlier than 20:30Z although its string sorts later.
    offset = _record(sid="KI" + "b" * 32, date_created="2015-07-30T21:00:00+01:00")
    zulu = _record(sid="KI" + "a" * 32, date_created="2015-07-30T20:30:00Z")
    events = _run({}, [zulu, offset])
    assert [e.interaction_sid for e in events] == [offset.sid, zulu.sid]
    assert sort_key(offset) < sort_key(zulu)


def test_updated_event_without_date_updated_is_stamped_detected_at() -> None:
    old = Fingerprint(None, "sent", "sent")
    [event] = _run({FIXTURE["sid"]: old}, [_record(date_updated=None, inbound_resource_status="x")])
    assert event.timestamp == DETECTED
    assert event.changes == {"inbound_resource_status": ("sent", "x")}


def test_apply_replays_created_and_updated_events() -> None:
    old = Fingerprint("2015-07-30T20:00:00Z", "sent", "queued")
    record = _record()
    events = _run({FIXTURE["sid"]: old}, [record])
    assert apply({FIXTURE["sid"]: old}, events) == {FIXTURE["sid"]: record.fingerprint}
    assert apply({}, _run({}, [record])) == {FIXTURE["sid"]: record.fingerprint}


def test_apply_rejects_an_update_of_an_unknown_interaction() -> None:
    events = _run({FIXTURE["sid"]: Fingerprint(None, None, None)}, [_record()])
    with pytest.raises(ValueError, match="unknown interaction"):
        apply({}, events)


def test_apply_rejects_an_update_whose_old_value_does_not_fit() -> None:
    events = _run({FIXTURE["sid"]: Fingerprint(None, None, None)}, [_record()])
    with pytest.raises(ValueError, match="date_updated was"):
        apply({FIXTURE["sid"]: Fingerprint("2000-01-01T00:00:00Z", None, None)}, events)


@PROPERTY
@given(snapshots, snapshots)
def test_one_result_says_the_events_the_known_set_after_and_whether_anything_changed(
    previous: list[Interaction], fetched: list[Interaction]
) -> None:
    known = known_after(previous)
    result = diff(SERVICE, SESSION, known, fetched, DETECTED)
    assert result.known_after == {**known, **known_after(fetched)}
    assert apply(known, result.events) == result.known_after
    if result.unchanged:
        assert result.events == [] and result.known_after is known


_FP = Fingerprint("2026-11-27T10:00:05Z", "received", "delivered")
_fingerprints = st.sampled_from(
    [_FP, _FP._replace(inbound_resource_status="failed"), Fingerprint(None, None, None)]
)


@given(
    st.dictionaries(st.sampled_from(["KI1", "KI2", "KI3"]), _fingerprints, max_size=3),
    st.lists(st.tuples(st.sampled_from(["KI1", "KI2", "KI3"]), _fingerprints), max_size=4),
)
def test_unchanged_is_exactly_a_fetch_that_changes_no_known_fingerprint(
    known: dict[str, Fingerprint], listed: list[tuple[str, Fingerprint]]
) -> None:
    fetched = [_record(sid=sid, **fp._asdict()) for sid, fp in listed]
    unchanged = {**known, **known_after(fetched)} == known
    each_once = len({sid for sid, _ in listed}) == len(listed)
    shortcut = diff(SERVICE, SESSION, known, fetched, DETECTED).unchanged
    # Never wrong; exact when each sid is listed once (a sid listed with two fingerprints takes
    # the full path, which decides the winner).
    assert unchanged or not shortcut
    assert shortcut == unchanged or not each_once


def test_an_unchanged_fetch_listing_a_sid_twice_with_the_known_fingerprint_is_unchanged() -> None:
    record = _record()
    known = known_after([record])
    result = diff(SERVICE, SESSION, known, [record, record], DETECTED)
    assert result == (([], known, True))


def test_a_baseline_stores_the_fetch_and_makes_no_event() -> None:
    old = Fingerprint(None, None, None)
    record = _record()
    result = diff(SERVICE, SESSION, {FIXTURE["sid"]: old}, [record], DETECTED, notify=False)
    assert (result.events, result.unchanged) == ([], False)
    assert result.known_after == {FIXTURE["sid"]: record.fingerprint}


def test_assumed_interactions_make_no_event_and_the_stored_known_set_wins_over_them() -> None:
    one = _record(sid="KI" + "1" * 32)
    two = _record(sid="KI" + "2" * 32, outbound_resource_status="failed")
    three = _record(sid="KI" + "3" * 32)
    stored = {two.sid: two.fingerprint._replace(outbound_resource_status="sent")}
    assumed = {one.sid: one.fingerprint, two.sid: two.fingerprint}
    result = diff(SERVICE, SESSION, stored, [one, two, three], DETECTED, assumed=assumed)
    assert [(e.type, e.interaction_sid) for e in result.events] == [
        (EventType.UPDATED, two.sid),
        (EventType.CREATED, three.sid),
    ]
    assert result.known_after == {it.sid: it.fingerprint for it in (one, two, three)}
