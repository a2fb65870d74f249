"""The CLI facing an unusable state file: one clear line, exit 2, the file left untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from poller.state.sqlite.store import SqliteStore
from tests.support import run_poller


def _config(folder: Path) -> Path:
    path = folder / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "twilio": {
                    "account_sid": "AC" + "a" * 32,
                    "auth_token": "tok-cli-state",
                    "base_url": "http://127.0.0.1:9",
                },
                "state": {"path": str(folder / "state.db")},
                "watch": [{"service_sid": "KS" + "b" * 32, "all_sessions": True}],
                "sinks": [{"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
            }
        )
    )
    return path


def test_corrupt_state_file_is_refused_with_exit_2_and_left_untouched(tmp_path: Path) -> None:
    config = _config(tmp_path)
    state = tmp_path / "state.db"
    state.write_bytes(b"not a database, but someone's notes\n" * 100)
    before = hashlib.sha256(state.read_bytes()).hexdigest()
    for command in (("once",), ("state", "show")):
        result = run_poller(*command, "-c", str(config))
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith("poller: state error:") and "not a SQLite database" in line
        assert "Traceback" not in result.stderr
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before


async def test_second_poller_on_the_same_state_exits_at_once(tmp_path: Path) -> None:
    config = _config(tmp_path)
    async with SqliteStore.open(tmp_path / "state.db"):  # this process is "the daemon"
        result = run_poller("once", "-c", str(config), timeout=20)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "is in use by another poller process" in line
