"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import poller.observe.metrics  # noqa: F401  (imported first: every in-process test records metrics)
from poller.lab.receiver import ReceiverState, ReceiverThread
from tests.postgres import Cluster, Server, own_cluster, start_server
from tests.support import SECRET


@pytest.fixture
def receiver() -> Iterator[ReceiverThread]:
    """A webhook receiver on loopback that verifies signatures made with ``SECRET``."""
    with ReceiverThread(ReceiverState(secret=SECRET)) as running:
        yield running


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The PostgreSQL server of the whole run (``tests.postgres``); skips when there is none."""
    server = start_server()
    yield server
    if server.cluster is not None:
        server.cluster.remove()


@pytest.fixture
def pg_url(pg_server: Server) -> Iterator[str]:
    """The URL of an empty database of the test's own, dropped after it."""
    yield from pg_server.fresh_database()


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    """A cluster of the test's own, started, to stop and start under a running poller."""
    cluster = own_cluster()
    yield cluster
    cluster.remove()
