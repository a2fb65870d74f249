"""The frozen config dataclasses, from ``Config`` down to each sink; each field names its check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from poller.config.fields import (
    Model,
    boolean,
    items,
    literal,
    model,
    optional,
    secret,
    setting,
    tagged,
)
from poller.config.http import HttpConfig
from poller.config.messages import _NO_VALUE, _invalid
from poller.config.secret import SECRET_KEYS as SECRET_KEYS
from poller.config.secret import Secret
from poller.config.validators import (
    _base_url,
    _body_template,
    _content_type,
    _email_address,
    _email_addresses,
    _events,
    _filter_values,
    _headers,
    _integer,
    _number,
    _one_of,
    _postgres_url,
    _secret_text,
    _sid,
    _sid_like,
    _slack_webhook_url,
    _state_path,
    _subject_template,
    _target_url,
    _template,
    _text,
    _webhook_secret,
    redact_url,
)
from poller.events import INTERACTION_EVENT_TYPES

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
_SINK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Twilio Proxy allows 30 requests/s per Service; a private proxy or the simulator can take more,
# so the config accepts up to MAX_REQUESTS_PER_SECOND and warns above PROXY_RATE_LIMIT.
PROXY_RATE_LIMIT = 30.0
MAX_REQUESTS_PER_SECOND = 10_000.0

log = structlog.get_logger(__name__)

_secret = secret(_secret_text)
_seconds = _number()


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class TwilioConfig(Model):
    """How to reach Twilio Proxy, and how hard to push it."""

    account_sid: str = setting(_sid("AC"))
    auth_token: Secret | None = setting(optional(_secret), default=None)
    api_key_sid: str | None = setting(optional(_sid("SK")), default=None)
    api_key_secret: Secret | None = setting(optional(_secret), default=None)
    base_url: str = setting(_base_url, default="https://proxy.twilio.com")
    page_size: int = setting(_integer(1, 1000), default=1000)
    max_requests_per_second: float = setting(_number(high=MAX_REQUESTS_PER_SECOND), default=25.0)
    max_concurrency: int = setting(_integer(1, 256), default=8)
    timeout_seconds: float = setting(_seconds, default=20.0)
    retry_deadline_seconds: float = setting(_seconds, default=120.0)
    # Bounds on what Twilio may send (poller.twilio.body.AnswerLimits has the same defaults).
    max_page_bytes: int = setting(_integer(65_536, 1 << 30), default=32 << 20)
    max_pages: int = setting(_integer(1, 1_000_000), default=1_000)
    max_interactions_per_session: int = setting(_integer(1, 100_000_000), default=50_000)
    max_sessions_per_service: int = setting(_integer(1, 100_000_000), default=100_000)

    def _check(self) -> None:
        self._one_kind_of_auth()
        # Validation is the one place every way of loading a config goes through.
        if self.above_proxy_limit:
            log.warning(
                "config_rate_above_proxy_limit",
                max_requests_per_second=self.max_requests_per_second,
                proxy_limit=PROXY_RATE_LIMIT,
            )

    def _one_kind_of_auth(self) -> None:
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

    @property
    def above_proxy_limit(self) -> bool:
        """True when the rate exceeds Twilio Proxy's 30/s (fine for a private proxy only)."""
        return self.max_requests_per_second > PROXY_RATE_LIMIT

    @property
    def credentials(self) -> tuple[str, str]:
        """The HTTP Basic (username, password): the API key if set, else the account."""
        if self.api_key_sid is not None and self.api_key_secret is not None:
            return self.api_key_sid, self.api_key_secret.get_secret_value()
        assert self.auth_token is not None  # the check guarantees one kind of auth
        return self.account_sid, self.auth_token.get_secret_value()


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class StateConfig(Model):
    """Where the state lives (a SQLite file, or PostgreSQL) and how long gone sessions are kept.

    ``url`` (a ``postgresql://`` URL, a secret: it may hold the password) replaces ``path``;
    ``lease_seconds``: how long a replica owns a Service unrenewed (PostgreSQL only).
    """

    path: Path = setting(_state_path, default=Path("state.db"))
    url: Secret | None = setting(optional(secret(_postgres_url)), default=None)
    lease_seconds: float = setting(_number(minimum=3, inclusive=True), default=15.0)
    prune_after_seconds: float = setting(_seconds, default=7 * 24 * 3600.0)

    @property
    def backend(self) -> Literal["sqlite", "postgres"]:
        return "sqlite" if self.url is None else "postgres"

    @property
    def where(self) -> str:
        """Where the state is, for messages: the file, or the URL without its password."""
        return str(self.path) if self.url is None else redact_url(self.url.get_secret_value())


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class PollConfig(Model):
    """When sessions are polled."""

    interval_seconds: float = setting(_number(minimum=1, inclusive=True), default=30.0)
    first_run: Literal["baseline", "notify_all"] = setting(
        literal("baseline", "notify_all"), default="baseline"
    )
    settle_seconds: float = setting(_seconds, default=900.0)
    full_sweep_seconds: float = setting(_seconds, default=3600.0)
    timeout_seconds: float = setting(_seconds, default=120.0)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class DeliveryConfig(Model):
    """Retries, backoff and deadlines of deliveries to sinks."""

    max_attempts: int = setting(_integer(1), default=20)
    max_age_seconds: float = setting(_seconds, default=3 * 24 * 3600.0)
    initial_backoff_seconds: float = setting(_seconds, default=5.0)
    max_backoff_seconds: float = setting(_seconds, default=6 * 3600.0)
    concurrency: int = setting(_integer(1, 256), default=4)
    shutdown_timeout_seconds: float = setting(_seconds, default=10.0)
    once_deadline_seconds: float = setting(_seconds, default=60.0)
    # Events and their delivery attempts are kept this long after delivery (0: not at all).
    history_seconds: float = setting(_number(minimum=0, inclusive=True), default=7 * 24 * 3600.0)

    def _check(self) -> None:
        if self.initial_backoff_seconds > self.max_backoff_seconds:
            raise _invalid(
                f"expected at most max_backoff_seconds ({self.max_backoff_seconds:g})",
                at=("initial_backoff_seconds",),
                got=self.initial_backoff_seconds,
            )


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class WatchConfig(Model):
    """One Proxy Service: either the listed sessions or all of its sessions."""

    service_sid: str = setting(_sid("KS"))
    sessions: tuple[str, ...] = setting(items(_sid("KC")), default=())
    all_sessions: bool = setting(boolean, default=False)

    def _check(self) -> None:
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


_TYPES = _filter_values(_one_of(INTERACTION_TYPES), "message, voice or unknown")
_STATUSES = _filter_values(_one_of(RESOURCE_STATUSES), "a resource status")


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class SinkFilter(Model):
    """Which interactions a sink takes; every key optional, a list means "any of"."""

    type: tuple[str, ...] | None = setting(_TYPES, default=None)
    inbound_resource_status: tuple[str, ...] | None = setting(_STATUSES, default=None)
    outbound_resource_status: tuple[str, ...] | None = setting(_STATUSES, default=None)
    service_sid: tuple[str, ...] | None = setting(
        _filter_values(_sid_like("KS"), "a Service SID (KS...)"), default=None
    )
    session_sid: tuple[str, ...] | None = setting(
        _filter_values(_sid_like("KC"), "a Session SID (KC...)"), default=None
    )


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class _SinkCommon(Model):
    """The settings every sink type has: its name, the events it takes, its filter."""

    name: str = setting(_text("a name of 1 to 64 letters, digits, '_', '.', '-'", _SINK_NAME))
    events: tuple[str, ...] = setting(_events, default=INTERACTION_EVENT_TYPES)
    filter: SinkFilter | None = setting(optional(model(SinkFilter)), default=None)
    include_data: bool = setting(boolean, default=True)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class WebhookSinkConfig(_SinkCommon):
    """An HTTP endpoint receiving Standard-Webhooks-signed JSON events."""

    type: Literal["webhook"] = setting(literal("webhook"))
    url: str = setting(_target_url)
    secret: Secret | None = setting(optional(secret(_webhook_secret)), default=None)
    timeout_seconds: float = setting(_seconds, default=10.0)
    headers: dict[str, str] = setting(_headers, factory=dict)
    body_template: str | None = setting(optional(_body_template), default=None)
    content_type: str = setting(_content_type, default="application/json")

    def _check(self) -> None:
        if self.body_template is not None:
            from poller.config.templates import check_body_template

            check_body_template(self.body_template, self.events, include_data=self.include_data)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class SlackSinkConfig(_SinkCommon):
    """A Slack incoming webhook, or the Web API (token + channel, one thread per session)."""

    type: Literal["slack"] = setting(literal("slack"))
    webhook_url: Secret | None = setting(optional(secret(_slack_webhook_url)), default=None)
    token: Secret | None = setting(optional(_secret), default=None)
    channel: str | None = setting(optional(_text("a Slack channel id or name")), default=None)
    digest_threshold: int = setting(_integer(1), default=5)
    template: str | None = setting(optional(_template), default=None)
    api_base_url: str = setting(_base_url, default="https://slack.com/api")
    timeout_seconds: float = setting(_seconds, default=10.0)

    def _check(self) -> None:
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


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class TeamsSinkConfig(_SinkCommon):
    """A Microsoft Teams Workflows webhook receiving Adaptive Cards."""

    type: Literal["teams"] = setting(literal("teams"))
    webhook_url: Secret = setting(secret(_slack_webhook_url))
    digest_threshold: int = setting(_integer(1), default=5)
    timeout_seconds: float = setting(_seconds, default=10.0)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class DiscordSinkConfig(_SinkCommon):
    """A Discord channel webhook receiving embeds."""

    type: Literal["discord"] = setting(literal("discord"))
    webhook_url: Secret = setting(secret(_slack_webhook_url))
    digest_threshold: int = setting(_integer(1), default=5)
    timeout_seconds: float = setting(_seconds, default=10.0)


_SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class EmailSinkConfig(_SinkCommon):
    """An SMTP server relaying email to a list of addresses."""

    type: Literal["email"] = setting(literal("email"))
    smtp_host: str = setting(_text("a host name or address"))
    smtp_port: int | None = setting(optional(_integer(1, 65535)), default=None)
    security: Literal["starttls", "tls", "none"] = setting(
        literal("starttls", "tls", "none"), default="starttls"
    )
    username: str | None = setting(optional(_text("a user name")), default=None)
    password: Secret | None = setting(optional(_secret), default=None)
    sender: str = setting(_email_address, key="from")
    to: tuple[str, ...] = setting(_email_addresses)
    subject_template: str = setting(_subject_template, default="[twilio-proxy-poller] {{ title }}")
    digest_threshold: int = setting(_integer(1), default=5)
    timeout_seconds: float = setting(_seconds, default=30.0)

    def _check(self) -> None:
        if self.username is not None and self.password is None:
            raise _invalid("missing: username needs password", at=("password",), got=_NO_VALUE)
        if self.password is not None and self.username is None:
            raise _invalid("missing: password needs username", at=("username",), got=_NO_VALUE)

    @property
    def port(self) -> int:
        """``smtp_port``, else the usual port of ``security`` (587, 465 or 25)."""
        return self.smtp_port if self.smtp_port is not None else _SMTP_PORTS[self.security]


SinkConfig = (
    WebhookSinkConfig | SlackSinkConfig | TeamsSinkConfig | DiscordSinkConfig | EmailSinkConfig
)
_SINK_TYPES: dict[str, type[Model]] = {
    "webhook": WebhookSinkConfig,
    "slack": SlackSinkConfig,
    "teams": TeamsSinkConfig,
    "discord": DiscordSinkConfig,
    "email": EmailSinkConfig,
}


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class LogConfig(Model):
    """Log rendering and threshold."""

    format: Literal["json", "console", "auto"] = setting(
        literal("json", "console", "auto"), default="auto"
    )
    level: Literal["debug", "info", "warning", "error"] = setting(
        literal("debug", "info", "warning", "error"), default="info"
    )


_SINK = tagged(_SINK_TYPES, "expected webhook, slack, teams, discord or email")


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class Config(Model):
    """The whole validated configuration."""

    twilio: TwilioConfig = setting(model(TwilioConfig))
    state: StateConfig = setting(model(StateConfig), factory=StateConfig)
    poll: PollConfig = setting(model(PollConfig), factory=PollConfig)
    delivery: DeliveryConfig = setting(model(DeliveryConfig), factory=DeliveryConfig)
    watch: tuple[WatchConfig, ...] = setting(items(model(WatchConfig), min_length=1))
    sinks: tuple[SinkConfig, ...] = setting(items(_SINK, min_length=1))
    http: HttpConfig | None = setting(optional(model(HttpConfig)), default=None)
    log: LogConfig = setting(model(LogConfig), factory=LogConfig)

    def _check(self) -> None:
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
