"""The tests' one fake clock (tests/clock.py) keeps the promises its users rely on."""

from __future__ import annotations

import asyncio

import pytest

from tests.clock import FakeClock


def test_advance_moves_both_clocks_and_step_moves_only_the_wall() -> None:
    clock = FakeClock(wall=5_000.0, monotonic=10.0)
    clock.advance(2.5)
    assert (clock.time(), clock.monotonic()) == (5_002.5, 12.5)
    clock.step(-3600.0)
    assert (clock.time(), clock.monotonic()) == (1_402.5, 12.5)


async def test_an_auto_sleep_jumps_time_forward_at_once_and_is_recorded() -> None:
    clock = FakeClock(monotonic=100.0)
    await clock.sleep(1.5)
    await clock.sleep(-1.0)  # a negative sleep returns at once and never moves time back
    assert clock.monotonic() == 101.5
    assert clock.slept == [1.5, -1.0]


async def test_a_manual_sleep_waits_until_advance_passes_its_deadline() -> None:
    clock = FakeClock(monotonic=0.0, auto=False)
    woken: list[str] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woken.append(name)

    tasks = [asyncio.create_task(nap("long", 2.0)), asyncio.create_task(nap("short", 1.0))]
    await asyncio.sleep(0)
    assert clock.sleeping == 2
    clock.advance(1.0, wake=False)
    await asyncio.sleep(0)
    assert woken == []  # time passed, but nobody woke the sleepers yet
    clock.advance(0.0)
    await tasks[1]
    assert (woken, clock.sleeping) == (["short"], 1)
    clock.advance(1.0)
    await tasks[0]
    assert woken == ["short", "long"]


def test_another_process_reads_its_origin_and_moves_with_the_clock() -> None:
    clock = FakeClock()
    other = clock.another_process(7.0)
    assert other() == 7.0
    clock.advance(0.25)
    assert other() == pytest.approx(7.25)
