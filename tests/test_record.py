"""``Record``'s repr, == and hash are those the dataclass decorator would have generated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from poller.record import Record


def _pair() -> tuple[type, type]:
    """The same record declared on ``Record`` and with the decorator's own methods."""

    @dataclass(frozen=True, slots=True, repr=False, eq=False)
    class Outcome(Record):
        sid: str
        events: int = 0
        note: str | None = field(default=None, repr=False)
        seen_at: float = field(default=0.0, compare=False)

    shared = Outcome

    @dataclass(frozen=True, slots=True)
    class Outcome:  # type: ignore[no-redef]
        sid: str
        events: int = 0
        note: str | None = field(default=None, repr=False)
        seen_at: float = field(default=0.0, compare=False)

    return shared, Outcome


SHARED, GENERATED = _pair()
VALUES = [("KC1",), ("KC1", 3), ("KC1", 3, "secret"), ("KC1", 3, None, 9.5), ("KC'2\n", -1)]


@pytest.mark.parametrize("values", VALUES)
def test_repr_is_the_decorators(values: tuple[object, ...]) -> None:
    assert repr(SHARED(*values)) == repr(GENERATED(*values))
    assert "secret" not in repr(SHARED(*values))  # a repr=False field is not shown


@pytest.mark.parametrize("a", VALUES)
@pytest.mark.parametrize("b", VALUES)
def test_equality_and_hash_are_the_decorators(a: tuple[object, ...], b: tuple[object, ...]) -> None:
    assert (SHARED(*a) == SHARED(*b)) is (GENERATED(*a) == GENERATED(*b))
    assert hash(SHARED(*a)) == hash(GENERATED(*a))


def test_a_field_not_compared_is_left_out_of_equality_and_hash() -> None:
    assert SHARED("KC1", 1, None, 1.0) == SHARED("KC1", 1, None, 2.0)
    assert hash(SHARED("KC1", 1, None, 1.0)) == hash(SHARED("KC1", 1, None, 2.0))


def test_records_of_two_classes_are_never_equal() -> None:
    @dataclass(frozen=True, slots=True, repr=False, eq=False)
    class Other(Record):
        sid: str
        events: int = 0
        note: str | None = None
        seen_at: float = 0.0

    assert SHARED("KC1") != Other("KC1")
    assert SHARED("KC1") != ("KC1", 0)
    assert SHARED("KC1").__eq__(("KC1", 0)) is NotImplemented


def test_a_record_stays_frozen_and_slotted() -> None:
    record = SHARED("KC1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.sid = "KC2"
    assert not hasattr(record, "__dict__")
