"""The CLI facing a PostgreSQL state it cannot use: one clear line, exit 2, never the password.

The server is a cluster of the test's own whose ``pg_hba.conf`` demands scram-sha-256 over
TCP, so a wrong password is really refused (the shared test cluster trusts everyone).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import yaml

from tests.postgres import Cluster
from tests.support import run_poller, wait_for

RIGHT = "right-pw-4417"
WRONG = "wrong-pw-9902"
COMMANDS = [("run",), ("once",), ("state", "show")]


@pytest.fixture
def scram_cluster(pg_cluster: Cluster) -> Cluster:
    """``pg_cluster`` with a role ``poller`` (password ``RIGHT``), TCP needing scram-sha-256."""
    with psycopg.connect(pg_cluster.url, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(f"CREATE ROLE poller LOGIN PASSWORD '{RIGHT}'")
        conn.execute("CREATE DATABASE poller OWNER poller")
    hba = pg_cluster.datadir / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    pg_cluster._run("pg_ctl", "-D", str(pg_cluster.datadir), "reload")
    wait_for(lambda: not _accepts(pg_cluster, WRONG), timeout=30, what="scram-sha-256 in force")
    return pg_cluster


def _accepts(cluster: Cluster, password: str) -> bool:
    try:
        psycopg.connect(_url(cluster, password), connect_timeout=5).close()
    except psycopg.OperationalError:
        return False
    return True


def _url(cluster: Cluster, password: str, *, database: str = "poller", host: str = "") -> str:
    return f"postgresql://poller:{password}@{host or '127.0.0.1'}:{cluster.port}/{database}"


def _config(folder: Path, url: str) -> Path:
    (folder / "state-url").write_text(url + "\n")
    path = folder / "config.yaml"
    config = {
        "twilio": {
            "account_sid": "AC" + "a" * 32,
            "auth_token": "tok-cli-postgres",
            "base_url": "http://127.0.0.1:9",
        },
        "state": {"url_file": str(folder / "state-url")},
        "watch": [{"service_sid": "KS" + "b" * 32, "all_sessions": True}],
        "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        "log": {"format": "json", "level": "info"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _refused_in_one_line(folder: Path, url: str, command: tuple[str, ...]) -> str:
    result = run_poller(*command, "-c", str(_config(folder, url)), timeout=60)
    assert result.returncode == 2, (command, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert RIGHT not in result.stdout + result.stderr
    assert WRONG not in result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("poller: state error: state database postgresql://poller:***@"), line
    return line


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_wrong_password_is_one_line_and_exit_2(
    scram_cluster: Cluster, tmp_path: Path, command: tuple[str, ...]
) -> None:
    assert _accepts(scram_cluster, RIGHT)  # the server does take the right one
    line = _refused_in_one_line(tmp_path, _url(scram_cluster, WRONG), command)
    assert 'password authentication failed for user "poller"' in line


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"database": "nope"}, 'database "nope" does not exist'),
        ({"host": "127.0.0.2"}, "Connection refused"),
    ],
    ids=["database", "host"],
)
def test_a_wrong_database_or_host_is_one_line_and_exit_2(
    scram_cluster: Cluster, tmp_path: Path, change: dict[str, str], expected: str
) -> None:
    url = _url(scram_cluster, RIGHT, **change)
    assert expected in _refused_in_one_line(tmp_path, url, ("once",))


def test_a_url_libpq_cannot_read_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"postgresql://poller:{RIGHT}@127.0.0.1:not-a-port/poller"
    assert "invalid integer value" in _refused_in_one_line(tmp_path, url, ("state", "show"))
