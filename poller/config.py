"""Configuration: YAML -> validated, frozen pydantic models.

:func:`load_config` reads the file, replaces ``${NAME}`` references from the environment, reads
``*_file`` secrets, validates, and turns the first problem into a one-line :class:`ConfigError`
such as ``poller.yaml: twilio.page_size: expected an integer from 1 to 1000, got 0``.
Messages never carry a secret: a secret key's value is shown as ``<hidden>``.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from poller.errors import ConfigError
from poller.events import EVENT_TYPES

__all__ = [
    "SECRET_KEYS",
    "Config",
    "DeliveryConfig",
    "HttpConfig",
    "LogConfig",
    "PollConfig",
    "SinkConfig",
    "SinkFilter",
    "SlackSinkConfig",
    "StateConfig",
    "TwilioConfig",
    "WatchConfig",
    "WebhookSinkConfig",
    "compile_template",
    "load_config",
    "parse_config",
    "summarize",
]

SECRET_KEYS: frozenset[str] = frozenset(
    {"auth_token", "api_key_secret", "secret", "webhook_url", "token"}
)
# Keys whose values are shown as <hidden> in errors: secrets, and headers (they may hold tokens).
_HIDDEN_KEYS = SECRET_KEYS | {"headers"}
# Which secrets accept X_file, per section ("sinks" by sink type; None: unknown type).
_TWILIO_FILE_SECRETS = ("auth_token", "api_key_secret")
_SINK_FILE_SECRETS: Mapping[str | None, tuple[str, ...]] = {
    "webhook": ("secret",),
    "slack": ("webhook_url", "token"),
    None: ("secret", "webhook_url", "token"),
}
# The spec's enums (twilio_proxy_v1.json: interaction_enum_type, interaction_enum_resource_status).
INTERACTION_TYPES = frozenset({"message", "voice", "unknown"})
RESOURCE_STATUSES = frozenset(
    {
        "accepted", "answered", "busy", "canceled", "completed", "deleted", "delivered",
        "delivery-unknown", "failed", "in-progress", "initiated", "no-answer", "queued",
        "received", "receiving", "ringing", "scheduled", "sending", "sent", "undelivered",
        "unknown",
    }
)  # fmt: skip
_RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SINK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

Loc = tuple[str | int, ...]


class _NoValue:
    """Marks an error that shows no ``got`` part (the input is a whole section)."""


_NO_VALUE = _NoValue()


def _invalid(expected: str, *, at: Loc = (), got: object = None) -> PydanticCustomError:
    """An error for the formatter: ``at`` extends the key path; ``got`` replaces the input."""
    context: dict[str, Any] = {"at": at}
    if got is not None:
        context["got"] = got
    return PydanticCustomError("poller", expected, context)


# -- scalar validators --------------------------------------------------------------------


def _as_number(value: object) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):  # from ${ENV} interpolation
        text = value.strip()
        for parse in (int, float):
            try:
                number: float | int = parse(text)
            except ValueError:
                continue
            return number if math.isfinite(number) else None
    return None


def _integer(low: int, high: int | None = None) -> PlainValidator:
    expected = (
        f"expected an integer from {low} to {high}"
        if high is not None
        else f"expected an integer >= {low}"
    )

    def check(value: object) -> int:
        number = _as_number(value)
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if not isinstance(number, int) or number < low or (high is not None and number > high):
            raise _invalid(expected)
        return number

    return PlainValidator(check)


def _number(
    *, minimum: float = 0.0, inclusive: bool = False, high: float | None = None
) -> PlainValidator:
    bound = f">= {minimum:g}" if inclusive else f"greater than {minimum:g}"
    expected = f"expected a number {bound}" + (f" and at most {high:g}" if high else "")

    def check(value: object) -> float:
        number = _as_number(value)
        if number is None:
            raise _invalid(expected)
        too_low = number < minimum if inclusive else number <= minimum
        if too_low or (high is not None and number > high):
            raise _invalid(expected)
        return float(number)

    return PlainValidator(check)


def _sid(prefix: str) -> PlainValidator:
    pattern = re.compile(rf"{prefix}[0-9a-fA-F]{{32}}")

    def check(value: object) -> str:
        if isinstance(value, str) and pattern.fullmatch(value):
            return value
        raise _invalid(f"expected {prefix} followed by 32 hex digits")

    return PlainValidator(check)


def _text(what: str, pattern: re.Pattern[str] | None = None) -> PlainValidator:
    def check(value: object) -> str:
        usable = isinstance(value, str) and value and value.strip() == value
        if usable and (pattern is None or pattern.fullmatch(str(value))):
            return str(value)
        raise _invalid(f"expected {what}")

    return PlainValidator(check)


def _check_url(value: object, *, base: bool) -> str:
    """Return an http(s) URL; a ``base`` URL has no credentials, query or fragment."""
    what = "expected an http(s) URL with a host" + (", no query or fragment" if base else "")
    if not isinstance(value, str) or value.strip() != value:
        raise _invalid(what)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _invalid(what, got=_NO_VALUE) from None
    # Show the URL without credentials, query or fragment: they may hold tokens.
    shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid(what, got=shown)
    if base and (parts.query or parts.fragment or "?" in value or "#" in value):
        raise _invalid(what, got=shown + "?...")
    if base and (parts.username is not None or parts.password is not None):
        raise _invalid("expected a URL without user:password@", got=shown)
    return value.rstrip("/") if base else value


def _base_url(value: object) -> str:
    return _check_url(value, base=True)


def _target_url(value: object) -> str:
    return _check_url(value, base=False)


def _secret_text(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not text or text.strip() != text:
        raise _invalid("expected a non-empty secret without surrounding whitespace")
    return value


def _webhook_secret(value: SecretStr) -> SecretStr:
    text = value.get_secret_value().removeprefix("whsec_")
    try:
        size = len(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        size = 0
    if not 24 <= size <= 64:
        raise _invalid("expected a Standard Webhooks secret: whsec_ + base64 of 24 to 64 bytes")
    return value


def _slack_webhook_url(value: SecretStr) -> SecretStr:
    _check_url(value.get_secret_value(), base=False)
    return value


def _events(value: object) -> tuple[str, ...]:
    expected = f"expected a non-empty list of {' or '.join(EVENT_TYPES)}"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise _invalid(expected)
    for index, item in enumerate(value):
        if item not in EVENT_TYPES:
            raise _invalid(f"expected {' or '.join(EVENT_TYPES)}", at=(index,), got=item)
    return tuple(dict.fromkeys(value))


def _filter_values(check: Callable[[object], bool], what: str) -> PlainValidator:
    def validate(value: object) -> tuple[str, ...] | None:
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not items:
            raise _invalid(f"expected {what}, or a non-empty list of them")
        for index, item in enumerate(items):
            if not isinstance(item, str) or not check(item):
                raise _invalid(f"expected {what}", at=(index,), got=item)
        return tuple(items)

    return PlainValidator(validate)


def _one_of(allowed: frozenset[str]) -> Callable[[object], bool]:
    return lambda item: item in allowed


def _sid_like(prefix: str) -> Callable[[object], bool]:
    pattern = re.compile(rf"{prefix}[0-9a-fA-F]{{32}}")
    return lambda item: isinstance(item, str) and pattern.fullmatch(item) is not None


def _headers(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _invalid("expected a mapping of header names to strings")
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise _invalid("expected an HTTP header name", at=(str(name),), got=_NO_VALUE)
        if name.lower() in _RESERVED_HEADERS:
            raise _invalid(
                "expected a header the poller does not set itself "
                "(not webhook-id, webhook-timestamp, webhook-signature, content-type)",
                at=(name,),
                got=_NO_VALUE,
            )
        if not isinstance(text, str) or "\r" in text or "\n" in text:
            raise _invalid("expected a single-line string", at=(name,))
    return dict(value)


_TEMPLATES = SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)


def compile_template(source: str) -> jinja2.Template:
    """Compile a Slack message template in the sandbox every template runs in."""
    return _TEMPLATES.from_string(source)


def _template(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid("expected a non-empty Jinja2 template string")
    try:
        compile_template(value)
    except jinja2.TemplateSyntaxError as exc:
        message = " ".join(str(exc.message or "syntax error").split())
        raise _invalid(
            f"expected a valid Jinja2 template, line {exc.lineno}: {message}", got=_NO_VALUE
        ) from None
    return value


def _split_listen(value: str) -> tuple[str, int] | None:
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    elif ":" in host or any(c.isspace() for c in host) or "/" in host:
        return None
    port = int(port_text)
    return (host, port) if 1 <= port <= 65535 else None


def _listen(value: object) -> str:
    if not isinstance(value, str) or _split_listen(value) is None:
        raise _invalid("expected host:port (or [ipv6]:port) with a port from 1 to 65535")
    return value


def _state_path(value: object) -> Path:
    if isinstance(value, Path) or (isinstance(value, str) and value.strip()):
        return Path(value)
    raise _invalid("expected a file path")


Secret = Annotated[SecretStr, AfterValidator(_secret_text)]
Seconds = Annotated[float, _number()]
AccountSid = Annotated[str, _sid("AC")]
ServiceSid = Annotated[str, _sid("KS")]
SessionSid = Annotated[str, _sid("KC")]
BaseUrl = Annotated[str, PlainValidator(_base_url)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- models -------------------------------------------------------------------------------


class TwilioConfig(_Model):
    """How to reach Twilio Proxy, and how hard to push it."""

    account_sid: AccountSid
    auth_token: Secret | None = None
    api_key_sid: Annotated[str, _sid("SK")] | None = None
    api_key_secret: Secret | None = None
    base_url: BaseUrl = "https://proxy.twilio.com"
    page_size: Annotated[int, _integer(1, 1000)] = 1000
    max_requests_per_second: Annotated[float, _number(high=150)] = 25.0
    max_concurrency: Annotated[int, _integer(1, 256)] = 8
    timeout_seconds: Seconds = 20.0
    retry_deadline_seconds: Seconds = 120.0

    @model_validator(mode="after")
    def _one_kind_of_auth(self) -> TwilioConfig:
        api_key = self.api_key_sid is not None or self.api_key_secret is not None
        if self.auth_token is not None and api_key:
            raise _invalid(
                "expected auth_token or api_key_sid + api_key_secret, not both",
                at=("auth_token",),
                got=_NO_VALUE,
            )
        if self.auth_token is None and not api_key:
            raise _invalid(
                "missing: set auth_token, or api_key_sid + api_key_secret",
                at=("auth_token",),
                got=_NO_VALUE,
            )
        if api_key and self.api_key_sid is None:
            raise _invalid("missing: api_key_secret needs api_key_sid", at=("api_key_sid",))
        if api_key and self.api_key_secret is None:
            raise _invalid(
                "missing: api_key_sid needs api_key_secret", at=("api_key_secret",), got=_NO_VALUE
            )
        return self

    @property
    def credentials(self) -> tuple[str, str]:
        """The HTTP Basic (username, password): the API key if set, else the account."""
        if self.api_key_sid is not None and self.api_key_secret is not None:
            return self.api_key_sid, self.api_key_secret.get_secret_value()
        assert self.auth_token is not None  # the validator guarantees one kind of auth
        return self.account_sid, self.auth_token.get_secret_value()


class StateConfig(_Model):
    """Where the SQLite state lives and how long gone sessions are kept."""

    path: Annotated[Path, PlainValidator(_state_path)] = Path("state.db")
    prune_after_seconds: Seconds = 7 * 24 * 3600.0


class PollConfig(_Model):
    """When sessions are polled."""

    interval_seconds: Annotated[float, _number(minimum=1, inclusive=True)] = 30.0
    first_run: Literal["baseline", "notify_all"] = "baseline"
    settle_seconds: Seconds = 900.0
    full_sweep_seconds: Seconds = 3600.0
    timeout_seconds: Seconds = 120.0


class DeliveryConfig(_Model):
    """Retries, backoff and deadlines of deliveries to sinks."""

    max_attempts: Annotated[int, _integer(1)] = 20
    max_age_seconds: Seconds = 3 * 24 * 3600.0
    initial_backoff_seconds: Seconds = 5.0
    max_backoff_seconds: Seconds = 6 * 3600.0
    concurrency: Annotated[int, _integer(1, 256)] = 4
    shutdown_timeout_seconds: Seconds = 10.0
    once_deadline_seconds: Seconds = 60.0

    @model_validator(mode="after")
    def _backoff_order(self) -> DeliveryConfig:
        if self.initial_backoff_seconds > self.max_backoff_seconds:
            raise _invalid(
                f"expected at most max_backoff_seconds ({self.max_backoff_seconds:g})",
                at=("initial_backoff_seconds",),
                got=self.initial_backoff_seconds,
            )
        return self


class WatchConfig(_Model):
    """One Proxy Service: either the listed sessions or all of its sessions."""

    service_sid: ServiceSid
    sessions: tuple[SessionSid, ...] = ()
    all_sessions: bool = False

    @model_validator(mode="after")
    def _one_selection(self) -> WatchConfig:
        if self.all_sessions and self.sessions:
            raise _invalid(
                "expected either sessions or all_sessions: true, not both",
                at=("all_sessions",),
                got=_NO_VALUE,
            )
        if not self.all_sessions and not self.sessions:
            raise _invalid(
                "expected a non-empty sessions list or all_sessions: true", at=("sessions",)
            )
        return self


class SinkFilter(_Model):
    """Which interactions a sink takes; every key optional, a list means "any of"."""

    type: Annotated[
        tuple[str, ...] | None,
        _filter_values(_one_of(INTERACTION_TYPES), "message, voice or unknown"),
    ] = None
    inbound_resource_status: Annotated[
        tuple[str, ...] | None, _filter_values(_one_of(RESOURCE_STATUSES), "a resource status")
    ] = None
    outbound_resource_status: Annotated[
        tuple[str, ...] | None, _filter_values(_one_of(RESOURCE_STATUSES), "a resource status")
    ] = None
    service_sid: Annotated[
        tuple[str, ...] | None, _filter_values(_sid_like("KS"), "a Service SID (KS...)")
    ] = None
    session_sid: Annotated[
        tuple[str, ...] | None, _filter_values(_sid_like("KC"), "a Session SID (KC...)")
    ] = None


class _SinkCommon(_Model):
    name: Annotated[str, _text("a name of 1 to 64 letters, digits, '_', '.', '-'", _SINK_NAME)]
    events: Annotated[tuple[str, ...], PlainValidator(_events)] = EVENT_TYPES
    filter: SinkFilter | None = None
    include_data: bool = True


class WebhookSinkConfig(_SinkCommon):
    """An HTTP endpoint receiving Standard-Webhooks-signed JSON events."""

    type: Literal["webhook"]
    url: Annotated[str, PlainValidator(_target_url)]
    secret: Annotated[SecretStr, AfterValidator(_webhook_secret)] | None = None
    timeout_seconds: Seconds = 10.0
    headers: Annotated[dict[str, str], PlainValidator(_headers)] = Field(default_factory=dict)


class SlackSinkConfig(_SinkCommon):
    """A Slack incoming webhook, or the Web API (token + channel, one thread per session)."""

    type: Literal["slack"]
    webhook_url: Annotated[SecretStr, AfterValidator(_slack_webhook_url)] | None = None
    token: Secret | None = None
    channel: Annotated[str, _text("a Slack channel id or name")] | None = None
    digest_threshold: Annotated[int, _integer(1)] = 5
    template: Annotated[str, PlainValidator(_template)] | None = None
    api_base_url: BaseUrl = "https://slack.com/api"
    timeout_seconds: Seconds = 10.0

    @model_validator(mode="after")
    def _one_destination(self) -> SlackSinkConfig:
        if self.webhook_url is not None and (self.token is not None or self.channel is not None):
            raise _invalid(
                "expected webhook_url or token + channel, not both",
                at=("webhook_url",),
                got=_NO_VALUE,
            )
        if self.webhook_url is None and self.token is None and self.channel is None:
            raise _invalid(
                "missing: set webhook_url, or token + channel", at=("webhook_url",), got=_NO_VALUE
            )
        if self.webhook_url is None and self.token is None:
            raise _invalid("missing: channel needs token", at=("token",), got=_NO_VALUE)
        if self.webhook_url is None and self.channel is None:
            raise _invalid("missing: token needs channel", at=("channel",), got=_NO_VALUE)
        return self


SinkConfig = Annotated[WebhookSinkConfig | SlackSinkConfig, Field(discriminator="type")]


class HttpConfig(_Model):
    """The /healthz, /readyz and /metrics listener."""

    listen: Annotated[str, PlainValidator(_listen)]

    @property
    def host(self) -> str:
        split = _split_listen(self.listen)
        assert split is not None  # validated
        return split[0]

    @property
    def port(self) -> int:
        split = _split_listen(self.listen)
        assert split is not None  # validated
        return split[1]


class LogConfig(_Model):
    """Log rendering and threshold."""

    format: Literal["json", "console", "auto"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Model):
    """The whole validated configuration."""

    twilio: TwilioConfig
    state: StateConfig = Field(default_factory=StateConfig)
    poll: PollConfig = Field(default_factory=PollConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    watch: tuple[WatchConfig, ...] = Field(min_length=1)
    sinks: tuple[SinkConfig, ...] = Field(min_length=1)
    http: HttpConfig | None = None
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _unique(self) -> Config:
        services: dict[str, int] = {}
        sessions: dict[str, int] = {}
        for i, watch in enumerate(self.watch):
            if watch.service_sid in services:
                raise _invalid(
                    f"expected a Service not already in watch[{services[watch.service_sid]}]",
                    at=("watch", i, "service_sid"),
                    got=watch.service_sid,
                )
            services[watch.service_sid] = i
            for j, sid in enumerate(watch.sessions):
                if sid in sessions:
                    raise _invalid(
                        f"expected a session not already watched (watch[{sessions[sid]}])",
                        at=("watch", i, "sessions", j),
                        got=sid,
                    )
                sessions[sid] = i
        names: dict[str, int] = {}
        for i, sink in enumerate(self.sinks):
            if sink.name in names:
                raise _invalid(
                    f"expected a name not already used by sinks[{names[sink.name]}]",
                    at=("sinks", i, "name"),
                    got=sink.name,
                )
            names[sink.name] = i
        return self


# -- loading ------------------------------------------------------------------------------


class _Problem(Exception):
    """A problem found before validation, at a key path."""

    def __init__(self, where: Loc, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys instead of keeping the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate the YAML config file at ``path``."""
    file = Path(path)
    source = os.fspath(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: expected UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the file: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        # Only the position and the parser's problem: the YAML text may hold secrets.
        raise ConfigError(f"{source}: {_yaml_problem(exc)}") from None
    base_dir = file.absolute().parent
    return parse_config(data, os.environ if env is None else env, source, base_dir=base_dir)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}: {' '.join(str(problem).split())}"


def parse_config(
    data: object,
    env: Mapping[str, str],
    source: str = "<config>",
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Validate already-parsed YAML ``data``; relative paths are taken from ``base_dir``."""
    if data is None:
        raise ConfigError(f"{source}: the configuration is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_short(data)}")
    base = None if base_dir is None else Path(base_dir)
    from_files: set[Loc] = set()
    try:
        resolved = _interpolate(data, env, ())
        assert isinstance(resolved, dict)
        _read_secret_files(resolved, base, from_files)
        _anchor_state_path(resolved, base)
    except _Problem as problem:
        raise ConfigError(f"{source}: {_dotted(problem.where)}: {problem.message}") from None
    try:
        return Config.model_validate(resolved)
    except ValidationError as exc:
        # Not chained: pydantic's own text repeats the input values, secrets included.
        raise ConfigError(f"{source}: {_describe(exc, from_files)}") from None


_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(value: object, env: Mapping[str, str], where: Loc) -> object:
    if isinstance(value, str):
        return _substitute(value, env, where)
    if isinstance(value, Mapping):
        return {
            key: _interpolate(item, env, (*where, key if isinstance(key, str) else str(key)))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(item, env, (*where, i)) for i, item in enumerate(value)]
    return value


def _substitute(text: str, env: Mapping[str, str], where: Loc) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group(1)
        if name is None or not _ENV_NAME.fullmatch(name):
            raise _Problem(where, "expected ${NAME} (letters, digits, _) or $${ for a literal ${")
        if name not in env:
            raise _Problem(where, f"environment variable {name} is not set")
        return env[name]

    return _REFERENCE.sub(replace, text) if "${" in text else text


def _read_secret_files(data: dict[str, Any], base: Path | None, from_files: set[Loc]) -> None:
    twilio = data.get("twilio")
    if isinstance(twilio, dict):
        data["twilio"] = _secret_files(twilio, _TWILIO_FILE_SECRETS, ("twilio",), base, from_files)
    sinks = data.get("sinks")
    if isinstance(sinks, list):
        for i, sink in enumerate(sinks):
            if isinstance(sink, dict):
                kind = sink.get("type")
                keys = _SINK_FILE_SECRETS.get(kind if isinstance(kind, str) else None)
                keys = _SINK_FILE_SECRETS[None] if keys is None else keys
                sinks[i] = _secret_files(sink, keys, ("sinks", i), base, from_files)


def _secret_files(
    section: dict[str, Any],
    keys: tuple[str, ...],
    where: Loc,
    base: Path | None,
    from_files: set[Loc],
) -> dict[str, Any]:
    out = dict(section)
    for key in keys:
        file_key = f"{key}_file"
        if file_key not in out:
            continue
        if key in out:
            raise _Problem((*where, file_key), f"expected {key} or {file_key}, not both")
        name = out.pop(file_key)
        if not isinstance(name, str) or not name.strip():
            raise _Problem((*where, file_key), f"expected a file path, got {_short(name)}")
        out[key] = _read_secret((*where, file_key), name, base)
        from_files.add((*where, key))
    return out


def _read_secret(where: Loc, name: str, base: Path | None) -> str:
    path = Path(name)
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _Problem(where, f"expected UTF-8 text in secret file {str(path)!r}") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _Problem(where, f"cannot read secret file {str(path)!r}: {reason}") from None
    text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not text:
        raise _Problem(where, f"secret file {str(path)!r} is empty")
    return text


def _anchor_state_path(data: dict[str, Any], base: Path | None) -> None:
    """Make a relative ``state.path`` (also the default) relative to the config's folder."""
    if base is None:
        return
    state = data.get("state", {})
    if not isinstance(state, dict):
        return
    path = state.get("path", "state.db")
    if isinstance(path, str) and path.strip() and not Path(path).is_absolute():
        data["state"] = {**state, "path": str(base / path)}


# -- error messages -----------------------------------------------------------------------

_SINK_TAGS: Mapping[str, type[_SinkCommon]] = {
    "webhook": WebhookSinkConfig,
    "slack": SlackSinkConfig,
}
_BUILTIN_EXPECTED: Mapping[str, str] = {
    "missing": "missing: this key is required",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "too_short": "expected at least one entry",
    "union_tag_invalid": "expected webhook or slack",
    "union_tag_not_found": "missing: expected webhook or slack",
}


def _describe(exc: ValidationError, from_files: set[Loc]) -> str:
    """One line for the first error: ``key.path: expected ..., got ...``."""
    error = exc.errors(include_url=False)[0]
    raw_loc: Loc = tuple(error["loc"])
    context: dict[str, Any] = dict(error.get("ctx") or {})
    kind = error["type"]
    loc = _strip_tags(raw_loc)
    got: object = context.get("got", error.get("input"))
    if kind == "poller":
        loc = (*loc, *context["at"])
        expected = str(error["msg"])
    elif kind == "extra_forbidden":
        expected = "unknown key" + _suggestion(raw_loc)
        got = _NO_VALUE  # a misspelt secret key must not show its value
    elif kind == "literal_error":
        expected = f"expected {context['expected']}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        loc, got = (*loc, "type"), context.get("tag")
        expected = _BUILTIN_EXPECTED[kind]
    else:
        expected = _BUILTIN_EXPECTED.get(kind, str(error["msg"]))
    hidden = any(part in _HIDDEN_KEYS for part in loc if isinstance(part, str))
    if loc in from_files:
        loc = (*loc[:-1], f"{loc[-1]}_file")
    if kind in ("missing", "union_tag_not_found") or isinstance(got, _NoValue):
        return f"{_dotted(loc)}: {expected}"
    return f"{_dotted(loc)}: {expected}, got {'<hidden>' if hidden else _short(got)}"


def _strip_tags(loc: Loc) -> Loc:
    """Drop the discriminator tag pydantic puts after ``sinks[i]``."""
    if len(loc) >= 3 and loc[0] == "sinks" and isinstance(loc[1], int) and loc[2] in _SINK_TAGS:
        return (*loc[:2], *loc[3:])
    return loc


def _suggestion(loc: Loc) -> str:
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        if part in _SINK_TAGS and model is Config:
            model = _SINK_TAGS[part]
        elif part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
    if model is None:
        return ""
    known = list(model.model_fields) + [f"{k}_file" for k in model.model_fields if k in SECRET_KEYS]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model a field holds (through Optional, tuple and Annotated), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if arg is not Ellipsis and (found := _model_in(arg)) is not None:
            return found
    return None


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _short(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value!r}"
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 42 else f"{text[:40]}...'"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "an empty list" if not value else "a list"
    return f"a {type(value).__name__}"


# -- summary ------------------------------------------------------------------------------


def _mask(secret: SecretStr | None) -> str:
    """``****`` and at most the last 4 characters (fewer for short secrets)."""
    if secret is None:
        return "none"
    text = secret.get_secret_value()
    keep = min(4, len(text) // 4)
    return "****" + (text[-keep:] if keep else "")


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _sink_lines(sink: WebhookSinkConfig | SlackSinkConfig) -> list[str]:
    if isinstance(sink, WebhookSinkConfig):
        signed = f"signed, secret {_mask(sink.secret)}" if sink.secret else "unsigned"
        target = f"{_host(sink.url)} ({signed})"
        extra = f"headers {', '.join(sink.headers) or 'none'}"
    elif sink.webhook_url is not None:
        target = f"incoming webhook {_mask(sink.webhook_url)}"
        extra = f"digest over {sink.digest_threshold}"
    else:
        target = f"{_host(sink.api_base_url)} channel {sink.channel} (token {_mask(sink.token)})"
        extra = f"digest over {sink.digest_threshold}"
    if isinstance(sink, SlackSinkConfig) and sink.template is not None:
        extra += ", custom template"
    flt = sink.filter
    terms = [] if flt is None else [
        f"{key}={'|'.join(values)}" for key, values in flt.model_dump().items() if values
    ]  # fmt: skip
    return [
        f"  {sink.name} ({sink.type}) -> {target}",
        f"    events {', '.join(sink.events)}; filter {' '.join(terms) or 'none'}; "
        f"include_data {str(sink.include_data).lower()}; timeout {sink.timeout_seconds:g}s; "
        f"{extra}",
    ]


def summarize(config: Config) -> str:
    """A human summary for ``poller check-config``; secrets masked."""
    tw, poll, dl = config.twilio, config.poll, config.delivery
    if tw.auth_token is not None:
        auth = f"auth token {_mask(tw.auth_token)}"
    else:
        auth = f"API key {tw.api_key_sid} secret {_mask(tw.api_key_secret)}"
    lines = [
        f"twilio: {tw.base_url} account {tw.account_sid}, {auth}",
        f"  page_size {tw.page_size}, {tw.max_requests_per_second:g} requests/s per Service, "
        f"concurrency {tw.max_concurrency}, timeout {tw.timeout_seconds:g}s, "
        f"retry deadline {tw.retry_deadline_seconds:g}s",
        f"state: {config.state.path} (prune gone sessions after "
        f"{config.state.prune_after_seconds:g}s)",
        f"poll: every {poll.interval_seconds:g}s, first_run {poll.first_run}, "
        f"settle {poll.settle_seconds:g}s, full sweep {poll.full_sweep_seconds:g}s, "
        f"timeout {poll.timeout_seconds:g}s",
        f"delivery: max {dl.max_attempts} attempts within {dl.max_age_seconds:g}s, backoff "
        f"{dl.initial_backoff_seconds:g}s to {dl.max_backoff_seconds:g}s, concurrency "
        f"{dl.concurrency}, shutdown {dl.shutdown_timeout_seconds:g}s, "
        f"once deadline {dl.once_deadline_seconds:g}s",
        "watch:",
    ]
    for watch in config.watch:
        what = "all sessions" if watch.all_sessions else ", ".join(watch.sessions)
        lines.append(f"  {watch.service_sid}: {what}")
    lines.append("sinks:")
    for sink in config.sinks:
        lines += _sink_lines(sink)
    lines.append(f"http: {config.http.listen if config.http else 'disabled'}")
    lines.append(f"log: format {config.log.format}, level {config.log.level}")
    return "\n".join(lines)
