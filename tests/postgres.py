"""A real PostgreSQL for tests: ``POLLER_TEST_POSTGRES_URL``, else a throwaway cluster.

The cluster is made in a temp dir with the machine's ``initdb`` and ``pg_ctl`` (Debian puts
them in ``/usr/lib/postgresql/*/bin``; ``PATH`` is searched too); as root they run as the
``postgres`` user (``runuser -u postgres --``). Without either, the tests that need it skip,
saying why, unless ``POLLER_TEST_REQUIRE_POSTGRES=1`` (set by ``.ci/run``): then they fail.

Each test gets a database of its own (``fresh_database``); a test that stops and starts the
server makes a cluster of its own (``Cluster.start``) so the others are not disturbed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

URL_ENV = "POLLER_TEST_POSTGRES_URL"
REQUIRE_ENV = "POLLER_TEST_REQUIRE_POSTGRES"


def unavailable(reason: str) -> None:
    """Skip the test (fail it where PostgreSQL is required) for ``reason``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required here ({REQUIRE_ENV}=1) but {reason}")
    pytest.skip(reason)


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, newest version first, or None."""
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(found, "initdb").exists() and Path(found, "pg_ctl").exists():
            return Path(found)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A throwaway PostgreSQL cluster on loopback, trust authentication, fsync off."""

    bindir: Path
    root: Path
    port: int
    runas: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls, bindir: Path) -> Cluster:
        root = Path(tempfile.mkdtemp(prefix="poller-pg-"))
        runas: list[str] = []
        if os.geteuid() == 0:
            runas = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres", "postgres")
        cluster = cls(bindir, root, free_port(), runas)
        cluster._run(
            "initdb", "-D", str(cluster.datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        return cluster

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.runas, str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-500:]}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.root / "log"), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class Server:
    """Where the tests' databases are made: a URL given, or a cluster of our own."""

    def __init__(self, url: str, cluster: Cluster | None) -> None:
        self.url = url
        self.cluster = cluster

    def database_url(self, name: str) -> str:
        base, _, _query = self.url.partition("?")
        head, _, _db = base.rpartition("/")
        return f"{head}/{name}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def fresh_database(self) -> Iterator[str]:
        name = self.create_database()
        try:
            yield self.database_url(name)
        finally:
            self.drop_database(name)


def start_server() -> Server:
    """The server the tests use, or skip (fail where required) saying why there is none."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[dev]')")
    url = os.environ.get(URL_ENV)
    if url:
        return Server(url, None)
    bindir = find_bindir()
    if bindir is None:
        unavailable(f"no PostgreSQL server here: set {URL_ENV}, or install initdb and pg_ctl")
    assert bindir is not None
    cluster = Cluster.create(bindir)
    cluster.start()
    return Server(cluster.url, cluster)


def own_cluster() -> Cluster:
    """A cluster of the test's own (to stop and start), or skip/fail saying why there is none."""
    bindir = find_bindir()
    if bindir is None:
        unavailable("no initdb/pg_ctl here: a test that restarts the server needs its own")
    assert bindir is not None
    cluster = Cluster.create(bindir)
    cluster.start()
    return cluster
