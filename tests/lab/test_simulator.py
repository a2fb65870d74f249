"""The Twilio Proxy simulator, over real HTTP on 127.0.0.1, against the official spec."""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

import httpx
import jsonschema
import pytest

from poller.http.wire import WireTransport
from poller.lab.simulator import (
    RunningSimulator,
    Simulator,
    SimulatorError,
    SimulatorThread,
    UnknownResourceError,
    main_simulate,
    run_traffic,
    start_simulator,
)
from poller.twilio.records import Fingerprint
from tests.clock import FakeClock

FIXTURES = Path(__file__).parents[1] / "fixtures"
SPEC = json.loads((FIXTURES / "twilio_proxy_v1.json").read_text())
SESSIONS_PATH = "/v1/Services/{ServiceSid}/Sessions"
SESSION_PATH = "/v1/Services/{ServiceSid}/Sessions/{Sid}"
INTERACTIONS_PATH = "/v1/Services/{ServiceSid}/Sessions/{SessionSid}/Interactions"
INTERACTION_PATH = INTERACTIONS_PATH + "/{Sid}"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
AUTH_BODY = {
    "code": 20003,
    "message": "Authenticate",
    "more_info": "https://www.twilio.com/docs/errors/20003",
    "status": 401,
}


def to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: ``nullable: true`` allows null, refs point at ``$defs``."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_json_schema(value) for key, value in node.items() if key != "nullable"}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/$defs/")
    if node.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def validator_for(path: str) -> jsonschema.protocols.Validator:
    schema = SPEC["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    root = to_json_schema(schema["schema"])
    root["$defs"] = to_json_schema(SPEC["components"]["schemas"])
    return jsonschema.Draft202012Validator(root)


def fixture(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return result


@pytest.fixture
async def running() -> AsyncIterator[RunningSimulator]:
    server = await start_simulator(seed=7, rate_limit=None)
    yield server
    await server.stop()


@pytest.fixture
async def client(running: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = WireTransport(httpx.Limits(max_connections=10))  # the poller's own: the fastest
    async with httpx.AsyncClient(
        base_url=running.base_url, auth=running.credentials, transport=transport
    ) as http:
        yield http


def seed_session(sim: Simulator) -> tuple[str, str]:
    service = sim.add_service()["sid"]
    session = sim.add_session(service, unique_name="Order #1234")["sid"]
    return service, session


def interactions_url(service: str, session: str) -> str:
    return f"/v1/Services/{service}/Sessions/{session}/Interactions"


# -- shapes against the official spec -------------------------------------------------------


def test_schema_converter_rejects_what_the_spec_forbids() -> None:
    validator = validator_for(INTERACTION_PATH)
    assert validator.is_valid({"sid": None, "data": None})
    assert not validator.is_valid({"sid": "XX" + "0" * 32})
    assert not validator.is_valid({"type": "fax"})


async def test_interaction_list_matches_the_official_schema_and_fixture_fields(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    sim = running.simulator
    service, session = seed_session(sim)
    sim.add_interaction(service, session, body="hello")
    sim.add_interaction(service, session, type="voice", duration=5)

    response = await client.get(interactions_url(service, session))

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    validator_for(INTERACTIONS_PATH).validate(body)
    assert list(body) == ["interactions", "meta"]
    assert list(body["meta"]) == list(fixture("interactions_list_read_empty.json")["meta"])
    expected_keys = set(fixture("interaction_fetch.json"))
    datas = set()
    for record in body["interactions"]:
        assert set(record) == expected_keys
        assert ISO_Z.match(record["date_created"])
        assert ISO_Z.match(record["date_updated"])
        assert record["account_sid"] == sim.account_sid
        assert (
            record["url"]
            == f"{running.base_url}{interactions_url(service, session)}/" + (record["sid"])
        )
        datas.add(record["data"])
    assert {json.loads(data).get("body") for data in datas} == {"hello", None}
    voice = next(r for r in body["interactions"] if r["type"] == "voice")
    assert json.loads(voice["data"]) == {"duration": "5"}
    assert re.match(r"^CA[0-9a-f]{32}$", voice["inbound_resource_sid"])
    assert voice["outbound_resource_type"] == "Call"


async def test_interaction_fetch_matches_the_official_schema(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    created = running.simulator.add_interaction(service, session, body="x")

    response = await client.get(f"{interactions_url(service, session)}/{created['sid']}")

    assert response.status_code == 200
    validator_for(INTERACTION_PATH).validate(response.json())
    assert response.json() == created
    assert re.match(r"^SM[0-9a-f]{32}$", created["outbound_resource_sid"])
    assert re.match(r"^KP[0-9a-f]{32}$", created["inbound_participant_sid"])


async def test_session_list_and_fetch_match_the_official_schema(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    running.simulator.close_session(session, reason="done")

    listed = await client.get(f"/v1/Services/{service}/Sessions")
    fetched = await client.get(f"/v1/Services/{service}/Sessions/{session}")
    by_name = await client.get(f"/v1/Services/{service}/Sessions/{quote('Order #1234')}")

    validator_for(SESSIONS_PATH).validate(listed.json())
    validator_for(SESSION_PATH).validate(fetched.json())
    assert list(listed.json()["meta"]) == list(fixture("sessions_list_read_empty.json")["meta"])
    record = fetched.json()
    assert set(record) == set(fixture("session_fetch.json"))
    assert listed.json()["sessions"] == [record]
    assert by_name.json() == record
    assert record["status"] == "closed"
    assert record["closed_reason"] == "done"
    assert ISO_Z.match(record["date_ended"])
    assert record["links"]["interactions"] == (
        f"{running.base_url}/v1/Services/{service}/Sessions/{session}/Interactions"
    )


# -- paging ---------------------------------------------------------------------------------


async def fetch_all(
    client: httpx.AsyncClient, first_url: str, key: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Follow next_page_url to the end: (every record, every meta)."""
    records: list[dict[str, Any]] = []
    metas: list[dict[str, Any]] = []
    url: str | None = first_url
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        body = response.json()
        records.extend(body[key])
        metas.append(body["meta"])
        url = body["meta"]["next_page_url"]
    return records, metas


@pytest.mark.parametrize("page_size", [1, 50, 1000])
async def test_paging_returns_every_interaction_once_in_ceil_n_over_size_requests(
    running: RunningSimulator, client: httpx.AsyncClient, page_size: int
) -> None:
    sim = running.simulator
    service, session = seed_session(sim)
    created = [sim.add_interaction(service, session)["sid"] for _ in range(2500)]
    first = f"{running.base_url}{interactions_url(service, session)}?PageSize={page_size}"

    records, metas = await fetch_all(client, first, "interactions")

    assert [r["sid"] for r in records] == created[::-1]  # newest first
    assert len(metas) == math.ceil(2500 / page_size)
    assert sim.stats()["requests"]["interactions"] == {"200": len(metas)}
    for number, meta in enumerate(metas):
        assert meta["page"] == number
        assert meta["page_size"] == page_size
        assert meta["first_page_url"].startswith(running.base_url)
        assert meta["first_page_url"].endswith(f"?PageSize={page_size}&Page=0")
        if number + 1 < len(metas):
            assert meta["next_page_url"].startswith(running.base_url + "/v1/")
            assert metas[number + 1]["url"] == meta["next_page_url"]
        assert (meta["previous_page_url"] is None) == (number == 0)


async def test_default_page_is_50_with_the_fixture_meta_shape(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    for _ in range(60):
        running.simulator.add_interaction(service, session)

    body = (await client.get(interactions_url(service, session))).json()

    base = f"{running.base_url}{interactions_url(service, session)}"
    assert len(body["interactions"]) == 50
    assert body["meta"]["url"] == f"{base}?PageSize=50&Page=0"
    assert body["meta"]["first_page_url"] == f"{base}?PageSize=50&Page=0"
    assert body["meta"]["previous_page_url"] is None
    assert body["meta"]["key"] == "interactions"
    assert body["meta"]["next_page_url"].startswith(f"{base}?PageSize=50&Page=1&PageToken=")


async def test_paging_by_token_neither_skips_nor_repeats_when_interactions_arrive(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    sim = running.simulator
    service, session = seed_session(sim)
    original = [sim.add_interaction(service, session)["sid"] for _ in range(30)]
    first = await client.get(interactions_url(service, session), params={"PageSize": 10})
    for _ in range(5):
        sim.add_interaction(service, session)

    rest, _ = await fetch_all(client, first.json()["meta"]["next_page_url"], "interactions")

    seen = [r["sid"] for r in first.json()["interactions"]] + [r["sid"] for r in rest]
    assert seen == original[::-1]


async def test_previous_page_url_leads_back_to_the_previous_page(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    for _ in range(25):
        running.simulator.add_interaction(service, session)
    first = await client.get(interactions_url(service, session), params={"PageSize": 10})
    second = await client.get(first.json()["meta"]["next_page_url"])

    back = await client.get(second.json()["meta"]["previous_page_url"])

    assert back.json()["interactions"] == first.json()["interactions"]
    assert back.json()["meta"]["page"] == 0


async def test_page_parameter_without_token_skips_whole_pages(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    sim = running.simulator
    service, session = seed_session(sim)
    created = [sim.add_interaction(service, session)["sid"] for _ in range(7)]

    body = await client.get(interactions_url(service, session), params="PageSize=3&Page=2")

    assert [r["sid"] for r in body.json()["interactions"]] == [created[0]]
    assert body.json()["meta"]["next_page_url"] is None


@pytest.mark.parametrize(
    "query", ["PageSize=0", "PageSize=1001", "PageSize=ten", "Page=-1", "PageToken=bogus"]
)
async def test_invalid_paging_parameters_answer_400_with_a_twilio_body(
    running: RunningSimulator, client: httpx.AsyncClient, query: str
) -> None:
    service, session = seed_session(running.simulator)

    response = await client.get(f"{interactions_url(service, session)}?{query}")

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "message", "more_info", "status"}
    assert body["status"] == 400
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}"


async def test_shuffle_mixes_the_order_within_pages_but_keeps_pages_whole(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    sim = running.simulator
    service, session = seed_session(sim)
    created = [sim.add_interaction(service, session)["sid"] for _ in range(100)]
    sim.shuffle = True

    records, metas = await fetch_all(
        client, f"{interactions_url(service, session)}?PageSize=50", "interactions"
    )

    sids = [r["sid"] for r in records]
    assert sids != created[::-1]
    assert sorted(sids[:50]) == sorted(created[50:])
    assert sorted(sids) == sorted(created)
    assert len(metas) == 2


# -- errors, auth and limits ----------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [None, ("wrong", "pair"), "right-user-wrong-password"],
    ids=["missing", "wrong-pair", "wrong-password"],
)
async def test_missing_or_wrong_credentials_answer_401_with_twilio_body(
    running: RunningSimulator, auth: Any
) -> None:
    service, session = seed_session(running.simulator)
    if auth == "right-user-wrong-password":
        auth = (running.simulator.account_sid, "nope")
    async with httpx.AsyncClient(base_url=running.base_url, auth=auth) as http:
        response = await http.get(interactions_url(service, session))

    assert response.status_code == 401
    assert response.json() == AUTH_BODY
    assert running.simulator.stats()["requests"]["interactions"] == {"401": 1}


async def test_extra_credential_pairs_such_as_api_keys_are_accepted() -> None:
    key = ("SK" + "1" * 32, "key-secret")
    async with await start_simulator(credentials=[key]) as server:
        service, session = seed_session(server.simulator)
        async with httpx.AsyncClient(base_url=server.base_url, auth=key) as http:
            response = await http.get(interactions_url(service, session))
    assert response.status_code == 200


@pytest.mark.parametrize("which", ["service", "session", "interaction", "path"])
async def test_unknown_resources_answer_404_code_20404(
    running: RunningSimulator, client: httpx.AsyncClient, which: str
) -> None:
    service, session = seed_session(running.simulator)
    unknown = {
        "service": interactions_url("KS" + "0" * 32, session),
        "session": interactions_url(service, "KC" + "0" * 32),
        "interaction": interactions_url(service, session) + "/KI" + "0" * 32,
        "path": f"/v1/Services/{service}/PhoneNumbers",
    }[which]

    response = await client.get(unknown)

    assert response.status_code == 404
    body = response.json()
    assert body["code"] == 20404
    assert body["status"] == 404
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20404"


async def statuses(client: httpx.AsyncClient, url: str, count: int) -> list[int]:
    return [(await client.get(url)).status_code for _ in range(count)]


async def test_rate_limit_allows_a_burst_of_150_then_30_per_second_per_service() -> None:
    clock = FakeClock()
    async with await start_simulator(monotonic=clock.monotonic) as server:
        sim = server.simulator
        service, session = seed_session(sim)
        other_service, other_session = seed_session(sim)
        url, other = (
            interactions_url(service, session),
            interactions_url(other_service, other_session),
        )
        async with httpx.AsyncClient(base_url=server.base_url, auth=server.credentials) as http:
            burst = await statuses(http, url, 151)
            limited = await http.get(url)
            other_ok = await http.get(other)
            clock.advance(1.0)
            refill = await statuses(http, url, 31)

    assert burst == [200] * 150 + [429]
    assert limited.json() == {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }
    assert "Retry-After" not in limited.headers
    assert other_ok.status_code == 200
    assert refill == [200] * 30 + [429]


async def test_retry_after_knob_adds_the_header_to_429_answers() -> None:
    clock = FakeClock()
    async with await start_simulator(monotonic=clock.monotonic, burst=1, retry_after=2.0) as server:
        service, session = seed_session(server.simulator)
        async with httpx.AsyncClient(base_url=server.base_url, auth=server.credentials) as http:
            codes = await statuses(http, interactions_url(service, session), 1)
            response = await http.get(interactions_url(service, session))
    assert codes == [200]
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"


# -- fault knobs ----------------------------------------------------------------------------


async def test_fail_next_fails_exactly_n_requests_with_the_status(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    running.simulator.fail_next(2, status=503)

    codes = await statuses(client, interactions_url(service, session), 3)
    first = await client.get(interactions_url(service, session))

    assert codes == [503, 503, 200]
    assert first.status_code == 200
    running.simulator.fail_next(1, status=500)
    failed = await client.get(interactions_url(service, session))
    assert failed.json()["code"] == 20500
    assert failed.json()["status"] == 500


async def test_fail_next_429_carries_retry_after_when_configured(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    running.simulator.retry_after = 0.5
    running.simulator.fail_next(1, status=429)

    response = await client.get(interactions_url(service, session))

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0.5"


async def test_malformed_truncated_body_is_not_json(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    running.simulator.add_interaction(service, session)
    running.simulator.fail_next(1, malformed="truncated")

    response = await client.get(interactions_url(service, session))

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


async def test_malformed_html_is_an_html_error_page(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    running.simulator.fail_next(1, malformed="html")

    response = await client.get(interactions_url(service, session))

    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")


async def test_malformed_missing_meta_keeps_records_but_drops_meta(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    running.simulator.add_interaction(service, session)
    running.simulator.fail_next(1, malformed="missing_meta")

    body = (await client.get(interactions_url(service, session))).json()

    assert "meta" not in body
    assert len(body["interactions"]) == 1


class _Rates(TypedDict, total=False):
    """Some of ``Simulator.fault_rates``' keyword arguments."""

    error_5xx: float
    rate_429: float


@pytest.mark.parametrize(
    ("rates", "expected"),
    [({"error_5xx": 1.0}, {500, 502, 503}), ({"rate_429": 1.0}, {429})],
)
async def test_fault_rate_of_one_fails_every_request(
    running: RunningSimulator,
    client: httpx.AsyncClient,
    rates: _Rates,
    expected: set[int],
) -> None:
    service, session = seed_session(running.simulator)
    running.simulator.fault_rates(**rates)

    codes = await statuses(client, interactions_url(service, session), 20)

    assert set(codes) <= expected
    running.simulator.clear_faults()
    assert (await client.get(interactions_url(service, session))).status_code == 200


async def fault_sequence(seed: int) -> list[int]:
    async with await start_simulator(seed=seed, rate_limit=None) as server:
        service, session = seed_session(server.simulator)
        server.simulator.fault_rates(error_5xx=0.2, rate_429=0.2, malformed=0.2)
        async with httpx.AsyncClient(base_url=server.base_url, auth=server.credentials) as http:
            result = []
            for _ in range(40):
                response = await http.get(interactions_url(service, session))
                is_json = response.headers["Content-Type"].startswith("application/json")
                ok = response.status_code == 200 and is_json and "meta" in response.text
                result.append(response.status_code if not ok else 0)
            return result


async def test_random_faults_replay_identically_for_a_seed() -> None:
    first, second, other = await fault_sequence(3), await fault_sequence(3), await fault_sequence(4)

    assert first == second
    assert first != other
    assert 0 in first
    assert any(code >= 500 for code in first)
    assert 429 in first


async def test_slow_answers_wait_slow_seconds(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    running.simulator.fault_rates(slow=1.0, slow_seconds=0.3)

    started = time.monotonic()
    response = await client.get(interactions_url(service, session))

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_rates_reject_numbers_outside_zero_to_one() -> None:
    sim = Simulator(seed=1)
    with pytest.raises(ValueError, match="from 0 to 1"):
        sim.fault_rates(error_5xx=1.5)
    with pytest.raises(ValueError, match="malformed kind"):
        sim.fail_next(1, malformed="gibberish")


# -- the model: dates, statuses, deletes, the change log ------------------------------------


def test_each_status_change_moves_date_updated_forward_even_within_one_second() -> None:
    clock = FakeClock()
    sim = Simulator(seed=1, clock=clock.time)
    service, session = seed_session(sim)
    created = sim.add_interaction(service, session)

    first = sim.set_status(created["sid"], outbound="sent")
    second = sim.set_status(created["sid"], outbound="delivered")

    dates = [created["date_updated"], first["date_updated"], second["date_updated"]]
    assert dates == sorted(set(dates))
    assert dates[0] == "2027-01-15T08:00:00Z"
    assert sim.clock_offset == 2
    assert sim.change_log() == [
        (created["sid"], Fingerprint(dates[0], "delivered", "queued")),
        (created["sid"], Fingerprint(dates[1], "delivered", "sent")),
        (created["sid"], Fingerprint(dates[2], "delivered", "delivered")),
    ]


def test_changes_in_later_seconds_use_the_clock_without_jumping() -> None:
    clock = FakeClock()
    sim = Simulator(seed=1, clock=clock.time)
    service, session = seed_session(sim)
    created = sim.add_interaction(service, session)
    clock.advance(10)

    updated = sim.set_status(created["sid"], inbound="received")

    assert updated["date_updated"] == "2027-01-15T08:00:10Z"
    assert sim.clock_offset == 0


def test_session_dates_and_status_follow_interactions() -> None:
    clock = FakeClock()
    sim = Simulator(seed=1, clock=clock.time)
    service, session = seed_session(sim)
    opened = sim.fetch_session(service, session)
    clock.advance(5)
    created = sim.add_interaction(service, session)
    clock.advance(5)
    sim.set_status(created["sid"], outbound="sent")

    current = sim.fetch_session(service, session)

    assert opened["status"] == "open"
    assert opened["date_last_interaction"] is None
    assert current["status"] == "in-progress"
    assert current["date_last_interaction"] == "2027-01-15T08:00:10Z"
    assert current["date_updated"] == "2027-01-15T08:00:05Z"


def test_strict_session_dates_give_every_change_of_a_session_its_own_second() -> None:
    sim = Simulator(seed=1, clock=FakeClock().time, strict_session_dates=True)
    service, session = seed_session(sim)

    dates = [sim.add_interaction(service, session)["date_created"] for _ in range(3)]

    assert len(set(dates)) == 3
    assert sim.fetch_session(service, session)["date_last_interaction"] == max(dates)


def test_closed_sessions_refuse_new_interactions() -> None:
    sim = Simulator(seed=1, clock=FakeClock().time)
    service, session = seed_session(sim)

    closed = sim.close_session(session, reason="expired")

    assert closed["status"] == "closed"
    assert closed["date_ended"] == closed["date_updated"]
    with pytest.raises(SimulatorError, match="closed"):
        sim.add_interaction(service, session)


def test_advance_walks_the_message_progression_then_reports_settled() -> None:
    sim = Simulator(seed=1)
    service, session = seed_session(sim)
    sid = sim.add_interaction(service, session)["sid"]

    steps = []
    while (record := sim.advance(sid)) is not None:
        steps.append(record["outbound_resource_status"])

    assert steps == ["sending", "sent", "delivered"]
    assert sim.unsettled([sid]) == []


def test_advance_completes_a_call_and_records_its_duration() -> None:
    sim = Simulator(seed=1)
    service, session = seed_session(sim)
    sid = sim.add_interaction(service, session, type="voice")["sid"]

    while (record := sim.advance(sid)) is not None:
        last = record

    assert (last["inbound_resource_status"], last["outbound_resource_status"]) == (
        "completed",
        "completed",
    )
    assert int(json.loads(last["data"])["duration"]) > 0


async def test_deleted_interactions_and_sessions_disappear_from_the_api(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    sim = running.simulator
    service, session = seed_session(sim)
    kept, gone = (sim.add_interaction(service, session)["sid"] for _ in range(2))

    sim.delete_interaction(gone)
    listed = (await client.get(interactions_url(service, session))).json()["interactions"]
    fetched = await client.get(f"{interactions_url(service, session)}/{gone}")
    sim.delete_session(session)
    after = await client.get(interactions_url(service, session))

    assert [r["sid"] for r in listed] == [kept]
    assert fetched.status_code == 404
    assert after.status_code == 404
    assert sim.owner(gone) == (service, session)
    with pytest.raises(UnknownResourceError):
        sim.set_status(kept, outbound="sent")


def test_seed_data_backdates_settled_history_without_moving_the_clock() -> None:
    clock = FakeClock()
    sim = Simulator(seed=1, clock=clock.time)

    service, sessions = sim.seed_data(3, 10, history_seconds=600)

    assert len(sessions) == 3
    assert sim.stats()["interactions"] == 30
    assert sim.clock_offset == 0
    records, _ = sim.page_interactions(service, sessions[0], 50)
    assert all(r["outbound_resource_status"] == "delivered" for r in records)
    assert records[-1]["date_created"] > "2027-01-15T07:50:00Z"
    assert records[0]["date_created"] < "2027-01-15T08:00:00Z"


def test_the_same_seed_gives_the_same_sids() -> None:
    def sids(seed: int) -> list[str]:
        sim = Simulator(seed=seed)
        service, session = seed_session(sim)
        return [service, session, sim.add_interaction(service, session)["sid"]]

    assert sids(5) == sids(5)
    assert sids(5) != sids(6)


async def test_stats_count_requests_by_path_kind_and_status(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    sim = running.simulator
    service, session = seed_session(sim)
    sim.fail_next(1, status=500)
    await statuses(client, interactions_url(service, session), 2)
    await client.get(f"/v1/Services/{service}/Sessions")
    await client.get(f"/v1/Services/{service}/Sessions/{session}")

    stats = sim.stats()

    assert stats["requests"] == {
        "interactions": {"200": 1, "500": 1},
        "session": {"200": 1},
        "sessions": {"200": 1},
    }
    assert stats["total_requests"] == 4


# -- the control API ------------------------------------------------------------------------


async def test_control_api_drives_the_simulator_over_http(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=running.base_url) as control:  # no auth needed
        service = (await control.post("/_sim/services", json={})).json()["sid"]
        session = (
            await control.post(f"/_sim/services/{service}/sessions", json={"unique_name": "a"})
        ).json()["sid"]
        created = (
            await control.post(
                f"/_sim/services/{service}/sessions/{session}/interactions",
                json={"body": "hi", "outbound_status": "sent"},
            )
        ).json()
        updated = (
            await control.post(
                f"/_sim/interactions/{created['sid']}/status", json={"outbound": "delivered"}
            )
        ).json()
        advanced = (await control.post(f"/_sim/interactions/{created['sid']}/advance")).json()
        info = (await control.get("/_sim/info")).json()
        changes = (await control.get("/_sim/changes", params={"since": 1})).json()

    listed = (await client.get(interactions_url(service, session))).json()["interactions"]
    assert listed == [updated]
    assert json.loads(created["data"]) == {"body": "hi"}
    assert advanced is None
    assert info["services"] == {service: [session]}
    assert info["account_sid"] == running.simulator.account_sid
    assert changes["next"] == 2
    assert changes["changes"] == [
        {
            "interaction_sid": created["sid"],
            "service_sid": service,
            "session_sid": session,
            "date_updated": updated["date_updated"],
            "inbound_resource_status": "delivered",
            "outbound_resource_status": "delivered",
        }
    ]


async def test_control_api_sets_faults_and_settings(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    service, session = seed_session(running.simulator)
    async with httpx.AsyncClient(base_url=running.base_url) as control:
        queued = await control.post("/_sim/faults/fail_next", json={"n": 1, "status": 502})
        settings = await control.post(
            "/_sim/settings", json={"retry_after": 3, "shuffle": True, "rate_limit": 5, "burst": 9}
        )
        failed = await client.get(interactions_url(service, session))
        rates = await control.post("/_sim/faults/rates", json={"rate_429": 1.0})
        limited = await client.get(interactions_url(service, session))
        await control.post("/_sim/faults/clear")
        cleared = await client.get(interactions_url(service, session))
        stats = (await control.get("/_sim/stats")).json()

    assert queued.json() == {"queued": 1}
    assert settings.json() == {"retry_after": 3.0, "shuffle": True, "rate_limit": 5, "burst": 9}
    assert failed.status_code == 502
    assert rates.json()["rate_429"] == 1.0
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert cleared.status_code == 200
    assert stats["requests"]["interactions"] == {"200": 1, "429": 1, "502": 1}


async def test_control_api_closes_and_deletes(
    running: RunningSimulator, client: httpx.AsyncClient
) -> None:
    sim = running.simulator
    service, session = seed_session(sim)
    doomed = sim.add_interaction(service, session)["sid"]
    offset_before = None
    async with httpx.AsyncClient(base_url=running.base_url) as control:
        deleted = await control.delete(f"/_sim/interactions/{doomed}")
        closed = await control.post(f"/_sim/sessions/{session}/close", json={"reason": "x"})
        refused = await control.post(
            f"/_sim/services/{service}/sessions/{session}/interactions", json={}
        )
        removed = await control.delete(f"/_sim/sessions/{session}")
        missing = await control.delete(f"/_sim/sessions/{session}")
        bad = await control.post("/_sim/faults/rates", json={"error_5xx": 2})
        offset_before = sim.clock_offset
        moved = await control.post("/_sim/clock/advance", json={"seconds": 60})

    assert deleted.json() == {"deleted": doomed}
    assert closed.json()["status"] == "closed"
    assert refused.status_code == 400
    assert "closed" in refused.json()["error"]
    assert removed.status_code == 200
    assert missing.status_code == 404
    assert bad.status_code == 400
    assert sim.clock_offset == offset_before + 60
    assert moved.json()["now"] == sim.now()
    assert (await client.get(interactions_url(service, session))).status_code == 404


# -- traffic and runners --------------------------------------------------------------------


async def test_run_traffic_adds_interactions_and_advances_statuses() -> None:
    sim = Simulator(seed=2)
    _, sessions = sim.seed_data(5, 0)

    made = await run_traffic(sim, 2000, sessions, max_changes=200, seed=1)

    log = sim.change_log()
    assert made == 200
    assert len(log) == 200
    created = {change.interaction_sid for change in log}
    assert len(created) < 200  # some changes were status progressions
    assert any(change.fingerprint.outbound_resource_status == "sending" for change in log)


async def test_run_traffic_stops_when_the_event_is_set() -> None:
    sim = Simulator(seed=2)
    sim.seed_data(2, 0)
    stop = asyncio.Event()

    task = asyncio.create_task(run_traffic(sim, 0.5, stop=stop))
    await asyncio.sleep(0)  # one turn: the first change is made, the next is 2 s away
    stop.set()
    made = await asyncio.wait_for(task, timeout=1)

    assert made == 1
    assert len(sim.change_log()) == 1


def test_simulator_thread_serves_sync_clients() -> None:
    with SimulatorThread(seed=9) as thread:
        service, session = seed_session(thread.simulator)
        thread.simulator.add_interaction(service, session)
        with httpx.Client(base_url=thread.base_url, auth=thread.simulator.credentials[0]) as http:
            response = http.get(interactions_url(service, session))
        traffic = thread.submit(run_traffic(thread.simulator, 500, [session], max_changes=5))
        assert traffic.result(timeout=5) == 5
    assert response.status_code == 200
    assert len(response.json()["interactions"]) == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(thread.base_url + "/_sim/stats")


async def test_start_simulator_on_a_taken_port_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            await start_simulator(port=taken.getsockname()[1])


def test_main_simulate_on_a_taken_port_says_so_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main_simulate(port, seed_sessions=1) == 1
    assert capsys.readouterr().err.startswith(f"poller simulate: cannot listen on 127.0.0.1:{port}")


def test_main_simulate_prints_how_to_connect_and_stops_on_sigterm() -> None:
    code = (
        "from poller.lab.simulator import main_simulate; raise SystemExit(main_simulate(0, seed=1))"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            base_url = line.split()[3]
            response = httpx.get(
                f"{base_url}/v1/Services/{fields['service_sid']}/Sessions",
                auth=(fields["account_sid"], fields["auth_token"]),
            )
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert line.startswith("simulator listening on http://127.0.0.1:")
    listed = {s["sid"] for s in response.json()["sessions"]}
    assert listed == set(fields["sessions"].split(","))
    assert len(listed) == 3
