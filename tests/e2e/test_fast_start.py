"""Each command imports only what it needs: heavy libraries stay out of the commands that do
not use them (what they cost: ``bench/bench_startup.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support import ROOT

HEAVY = (
    "pydantic",
    "aiohttp",
    "aiohttp.web",
    "httpx",
    "apscheduler",
    "prometheus_client",
    "jinja2",
    "standardwebhooks",
)

# Runs a command in this interpreter, then prints which of HEAVY it imported.
PROBE = """
import json, sys
from poller.cli import main
code = main(sys.argv[2:])
heavy = json.loads(sys.argv[1])
print(json.dumps({"code": code, "imported": [m for m in heavy if m in sys.modules]}))
"""


def _config(tmp_path: Path, sinks: list[dict[str, object]] | None = None, **sink: object) -> str:
    """A config with one Slack sink made of ``sink``, or with ``sinks``."""
    config = {
        "twilio": {
            "account_sid": "AC" + "0" * 32,
            "auth_token": "0" * 32,
            "base_url": "http://127.0.0.1:9",
            "retry_deadline_seconds": 0.5,
        },
        "state": {"path": str(tmp_path / "state.db")},
        "watch": [{"service_sid": "KS" + "0" * 32, "sessions": ["KC" + "0" * 32]}],
        "sinks": sinks or [{"name": "chat", "type": "slack", **sink}],
        "log": {"format": "json", "level": "error"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


# What only an operator's commands read (poller events, state show): once defines none of it.
OPERATOR_ONLY = ("poller.delivery.events_cli", "poller.state.views")

# What only polling and delivering use: check-config builds none of it.
POLLING = ("poller.twilio.records", "poller.twilio.client", "poller.state", "sqlite3", "orjson")


def _imported(*argv: str, watched: tuple[str, ...] = HEAVY) -> tuple[int, list[str]]:
    # Without coverage in the child: coverage itself imports sqlite3 (its data file).
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(watched), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env=env,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return int(result["code"]), list(result["imported"])


def test_check_config_imports_no_http_scheduler_metrics_or_template_library(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, webhook_url="https://hooks.slack.com/services/T0/B0/x")
    assert _imported("check-config", "-c", config) == (0, [])


def test_check_config_of_every_sink_type_imports_no_library_or_module_of_polling(
    tmp_path: Path,
) -> None:
    webhook: dict[str, object] = {
        "name": "hook",
        "type": "webhook",
        "url": "https://example.com/hook",
        "secret": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "headers": {"X-Team": "ops"},
        "filter": {"type": "message"},
    }
    chat = "https://chat.example.com/hook/x"
    sinks: list[dict[str, object]] = [
        webhook,
        {"name": "slack", "type": "slack", "token": "xoxb-1", "channel": "C1"},
        {"name": "teams", "type": "teams", "webhook_url": chat},
        {"name": "discord", "type": "discord", "webhook_url": chat},
        {"name": "mail", "type": "email", "smtp_host": "mail", "from": "a@b.co", "to": "c@d.co"},
    ]
    config = _config(tmp_path, sinks=sinks)
    assert _imported("check-config", "-c", config, watched=HEAVY + POLLING) == (0, [])


def test_a_config_with_a_template_still_has_it_checked(tmp_path: Path) -> None:
    webhook = "https://hooks.slack.com/services/T0/B0/x"
    good = _config(tmp_path, webhook_url=webhook, template="{{ event.type }}")
    assert _imported("check-config", "-c", good) == (0, ["jinja2"])
    bad = _config(tmp_path, webhook_url=webhook, template="{{ event.type ")
    assert _imported("check-config", "-c", bad)[0] == 2


def test_once_loads_neither_the_scheduler_nor_the_health_server_nor_jinja2(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, webhook_url="http://127.0.0.1:9/services/T0/B0/x")
    code, imported = _imported("once", "-c", config, watched=HEAVY + OPERATOR_ONLY)
    assert code == 1  # nobody answers at 127.0.0.1:9: the poll fails, as it should
    # what it polls with: not aiohttp, and no metrics (nothing would serve them)
    assert imported == ["httpx"]


def test_once_with_a_slack_template_loads_jinja2(tmp_path: Path) -> None:
    config = _config(
        tmp_path, webhook_url="http://127.0.0.1:9/services/T0/B0/x", template="{{ title }}"
    )
    code, imported = _imported("once", "-c", config)
    assert code == 1
    assert "jinja2" in imported


def test_once_with_a_webhook_sink_loads_jinja2_only_for_a_body_template(tmp_path: Path) -> None:
    plain: dict[str, object] = {
        "name": "hook",
        "type": "webhook",
        "url": "http://127.0.0.1:9/hooks",
    }
    config = _config(tmp_path, sinks=[plain])
    code, imported = _imported("once", "-c", config)
    assert code == 1
    assert imported == ["httpx", "standardwebhooks"]
    templated = {**plain, "body_template": '{"id": {{ event_id | tojson }}}'}
    code, imported = _imported("once", "-c", _config(tmp_path, sinks=[templated]))
    assert code == 1
    assert "jinja2" in imported
