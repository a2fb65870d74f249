"""The Twilio client against the simulator over loopback: paging, faults, the rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from poller.errors import CredentialsError, MalformedResponseError, NotFoundError
from poller.lab.simulator import RunningSimulator, start_simulator
from poller.twilio.client import ProxyClient


@dataclass(frozen=True)
class Settings:
    base_url: str
    account_sid: str
    auth_token: str
    page_size: int = 1000
    max_requests_per_second: float = 25.0
    max_concurrency: int = 8
    timeout_seconds: float = 5.0
    retry_deadline_seconds: float = 20.0

    @property
    def credentials(self) -> tuple[str, str]:
        return self.account_sid, self.auth_token


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(seed=2)
    yield running
    await running.stop()


def _settings(sim: RunningSimulator, **overrides: object) -> Settings:
    account, token = sim.credentials
    values: dict[str, object] = {"account_sid": account, "auth_token": token, **overrides}
    return Settings(sim.base_url, **values)  # type: ignore[arg-type]


def _requests(sim: RunningSimulator, kind: str) -> dict[str, int]:
    counts: dict[str, int] = sim.simulator.stats()["requests"].get(kind, {})
    return counts


async def test_2500_interactions_are_read_completely_in_3_requests(sim: RunningSimulator) -> None:
    s = sim.simulator
    service, (session,) = s.seed_data(1, 2500)
    async with ProxyClient(_settings(sim)) as client:
        records = await client.list_interactions(service, session)
    assert len(records) == 2500
    assert {r.sid for r in records} == set(s.interaction_sids(session))
    assert sum(sum(v.values()) for v in s.stats()["requests"].values()) == 3


async def test_sessions_list_pages_to_the_end(sim: RunningSimulator) -> None:
    service, sessions = sim.simulator.seed_data(120)
    async with ProxyClient(_settings(sim, page_size=50)) as client:
        listed = await client.list_sessions(service)
    assert sorted(x.sid for x in listed) == sorted(sessions)


async def test_5xx_and_429_are_retried_until_the_page_arrives(sim: RunningSimulator) -> None:
    s = sim.simulator
    service, (session,) = s.seed_data(1, 120)
    s.retry_after = 0.05
    s.fail_next(2, status=503)
    s.fail_next(1, status=429)
    async with ProxyClient(_settings(sim, page_size=50)) as client:
        records = await client.list_interactions(service, session)
    assert len(records) == 120


async def test_malformed_body_raises_an_error_naming_the_url_not_the_body(
    sim: RunningSimulator,
) -> None:
    s = sim.simulator
    service, (session,) = s.seed_data(1, 3)
    s.fail_next(1, status=200, malformed="truncated")
    async with ProxyClient(_settings(sim)) as client:
        with pytest.raises(MalformedResponseError) as caught:
            await client.list_interactions(service, session)
    assert session in str(caught.value)
    assert "{" not in str(caught.value)  # no body fragment in the message


async def test_wrong_token_and_unknown_session_are_clear_errors(sim: RunningSimulator) -> None:
    s = sim.simulator
    service, (session,) = s.seed_data(1, 1)
    async with ProxyClient(_settings(sim, auth_token="not-the-token")) as client:
        with pytest.raises(CredentialsError) as caught:
            await client.list_interactions(service, session)
    assert "not-the-token" not in str(caught.value)
    async with ProxyClient(_settings(sim)) as client:
        with pytest.raises(NotFoundError):
            await client.list_interactions(service, "KC" + "0" * 32)


async def test_client_rate_stays_under_the_simulated_proxy_limit(sim: RunningSimulator) -> None:
    s = sim.simulator
    s.set_rate_limit(30.0, burst=30.0)
    service, sessions = s.seed_data(60, 1)
    async with ProxyClient(_settings(sim, max_requests_per_second=25.0)) as client:
        for sid in sessions:
            await client.list_interactions(service, sid)
    counts = _requests(sim, "interactions")
    assert counts.get("429", 0) == 0
    assert counts.get("200") == 60
