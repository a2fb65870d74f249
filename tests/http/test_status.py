"""What a status means (StatusClass), and Retry-After parsing (moved from tests/test_backoff.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from poller.http.status import (
    MAX_RETRY_AFTER_SECONDS,
    StatusClass,
    classify,
    parse_http_date,
    parse_retry_after,
    retry_after,
)

NOW = 1_800_000_000.0


def http_date(unix: float) -> str:
    return format_datetime(datetime.fromtimestamp(unix, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([200, 201, 202, 204, 299], StatusClass.SUCCESS),
        ([300, 301, 302, 304, 307, 308, 399], StatusClass.REDIRECT),
        ([429], StatusClass.RATE_LIMITED),
        ([408, 425], StatusClass.RETRY_LATER),
        ([410], StatusClass.GONE),
        ([400, 401, 403, 404, 409, 413, 422, 499], StatusClass.CLIENT_ERROR),
        ([500, 501, 502, 503, 504, 599, 600, 999], StatusClass.SERVER_ERROR),
        ([100, 101, 199], StatusClass.UNEXPECTED),
    ],
    ids=lambda value: value.name if isinstance(value, StatusClass) else None,
)
def test_each_status_falls_in_its_class(statuses: list[int], expected: StatusClass) -> None:
    assert {status: classify(status) for status in statuses} == dict.fromkeys(statuses, expected)


def test_retry_after_reads_the_header_whatever_its_case() -> None:
    assert retry_after(httpx.Headers({"Retry-After": "12"}), NOW) == 12.0
    assert retry_after(httpx.Headers({"retry-after": http_date(NOW + 3)}), NOW) == 3.0
    assert retry_after(httpx.Headers(), NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0)],
)
def test_retry_after_delta_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_http_date_counts_from_now() -> None:
    assert parse_retry_after(http_date(NOW + 30), NOW) == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_means_now() -> None:
    assert parse_retry_after(http_date(NOW - 600), NOW) == 0.0


def test_retry_after_accepts_the_obsolete_rfc850_date_form() -> None:
    moment = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC).timestamp()
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", moment - 5) == pytest.approx(5.0)


@pytest.mark.parametrize("value", ["99999999", http_date(NOW + 10 * 86_400)])
def test_retry_after_is_capped_at_one_day(value: str) -> None:
    assert parse_retry_after(value, NOW) == MAX_RETRY_AFTER_SECONDS


@pytest.mark.parametrize(
    "value", [None, "", "soon", "1e3", "nan", "inf", "12 seconds", "Mon, 99 Foo 2026"]
)
def test_unusable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_http_date_without_zone_is_read_as_gmt() -> None:
    assert parse_http_date("Wed, 21 Oct 2015 07:28:00 -0000") == pytest.approx(1445412480.0)
