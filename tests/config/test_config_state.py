"""The state section: a SQLite path, or a PostgreSQL URL (a secret) for several replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from poller.config import parse_config
from poller.config.models import StateConfig
from poller.config.validators import redact_url
from poller.errors import ConfigError
from tests.config.test_config import valid

URL = "postgresql://poller:s3cret-pass@db.internal:5432/poller"


def state(section: dict[str, object], base: Path | None = None) -> StateConfig:
    data = valid()
    data["state"] = section
    return parse_config(data, {}, "cfg.yaml", base_dir=base).state


def refused(section: dict[str, object], base: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        state(section, base)
    return str(info.value)


def test_a_url_makes_a_postgres_state_shown_without_its_password() -> None:
    got = state({"url": URL, "lease_seconds": 9})
    assert (got.backend, got.lease_seconds) == ("postgres", 9.0)
    assert got.url is not None and got.url.get_secret_value() == URL
    assert got.where == "postgresql://poller:***@db.internal:5432/poller"
    assert "s3cret" not in repr(got)


def test_without_a_url_the_state_is_the_sqlite_file(tmp_path: Path) -> None:
    got = state({}, tmp_path)
    assert (got.backend, got.where) == ("sqlite", str(tmp_path / "state.db"))


def test_the_url_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "db-url").write_text(URL + "\n")
    got = state({"url_file": "db-url"}, tmp_path)
    assert got.url is not None and got.url.get_secret_value() == URL


def test_path_and_url_together_are_refused() -> None:
    message = refused({"url": URL, "path": "state.db"})
    assert "state.path: expected state.path or state.url, not both" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "url", ["mysql://u:s3cret-pass@h/db", "s3cret-pass", "postgresql://", "postgres:/x"]
)
def test_a_url_that_is_not_postgresql_is_refused_without_echoing_it(url: str) -> None:
    message = refused({"url": url})
    assert message == "cfg.yaml: state.url: expected a postgresql://user@host:port/database URL"


def test_a_lease_shorter_than_three_seconds_is_refused() -> None:
    assert "state.lease_seconds" in refused({"url": URL, "lease_seconds": 1})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (URL, "postgresql://poller:***@db.internal:5432/poller"),
        ("postgresql://db/poller?password=x1", "postgresql://db/poller"),
        ("postgres://u@[::1]:5/d", "postgres://u@[::1]:5/d"),
        ("no scheme", "<not a URL>"),
    ],
)
def test_redact_url_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
