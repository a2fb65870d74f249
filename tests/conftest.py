"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from poller.lab.receiver import ReceiverState, ReceiverThread
from tests.support import SECRET


@pytest.fixture
def receiver() -> Iterator[ReceiverThread]:
    """A webhook receiver on loopback that verifies signatures made with ``SECRET``."""
    with ReceiverThread(ReceiverState(secret=SECRET)) as running:
        yield running
