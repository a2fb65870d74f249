"""Backoff delays."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.backoff import Backoff


def test_delay_without_jitter_doubles_from_base_until_the_cap() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=10.0, jitter="none")
    assert [backoff.delay(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@given(st.integers(min_value=0, max_value=5000))
def test_ceiling_is_monotone_and_never_above_the_cap_even_for_huge_attempts(attempt: int) -> None:
    backoff = Backoff(base=0.5, factor=3.0, cap=45.0)
    assert backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1) <= 45.0


@given(st.integers(min_value=0, max_value=64), st.integers(min_value=0, max_value=2**32))
def test_full_jitter_stays_between_zero_and_the_ceiling(attempt: int, seed: int) -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=30.0, jitter="full")
    assert 0.0 <= backoff.delay(attempt, random.Random(seed)) <= backoff.ceiling(attempt)


@given(st.integers(min_value=0, max_value=64), st.integers(min_value=0, max_value=2**32))
def test_equal_jitter_stays_between_half_the_ceiling_and_the_ceiling(
    attempt: int, seed: int
) -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=30.0, jitter="equal")
    ceiling = backoff.ceiling(attempt)
    assert ceiling / 2 <= backoff.delay(attempt, random.Random(seed)) <= ceiling


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    backoff = Backoff(base=8.0, factor=2.0, cap=8.0, jitter="full")
    rng = random.Random(7)
    delays = [backoff.delay(0, rng) for _ in range(200)]
    assert min(delays) < 1.0
    assert max(delays) > 7.0


def test_same_seed_gives_the_same_delays() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=60.0)
    first = [backoff.delay(n, random.Random(3)) for n in range(5)]
    second = [backoff.delay(n, random.Random(3)) for n in range(5)]
    assert first == second


def test_delay_without_rng_uses_the_module_generator_within_bounds() -> None:
    assert 0.0 <= Backoff(base=2.0, factor=2.0, cap=5.0).delay(3) <= 5.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base": 0.0}, "base"),
        ({"base": float("nan")}, "base"),
        ({"factor": 0.5}, "factor"),
        ({"base": 5.0, "cap": 1.0}, "cap"),
        ({"jitter": "sideways"}, "jitter"),
    ],
)
def test_invalid_parameters_are_refused_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=f"Backoff.{field}"):
        Backoff(**kwargs)  # type: ignore[arg-type]  # deliberately wrong values


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff().delay(-1)
