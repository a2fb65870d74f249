"""The frozen pydantic models of the configuration, from ``Config`` down to each sink."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import structlog
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    model_validator,
)

from poller.config.messages import _NO_VALUE, _invalid
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
    _listen,
    _number,
    _one_of,
    _secret_text,
    _sid,
    _sid_like,
    _slack_webhook_url,
    _split_listen,
    _state_path,
    _subject_template,
    _target_url,
    _template,
    _text,
    _webhook_secret,
)
from poller.events import INTERACTION_EVENT_TYPES

SECRET_KEYS: frozenset[str] = frozenset(
    {"auth_token", "api_key_secret", "secret", "webhook_url", "token", "password"}
)
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

Secret = Annotated[SecretStr, AfterValidator(_secret_text)]
Seconds = Annotated[float, _number()]
AccountSid = Annotated[str, _sid("AC")]
ServiceSid = Annotated[str, _sid("KS")]
SessionSid = Annotated[str, _sid("KC")]
BaseUrl = Annotated[str, PlainValidator(_base_url)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TwilioConfig(_Model):
    """How to reach Twilio Proxy, and how hard to push it."""

    account_sid: AccountSid
    auth_token: Secret | None = None
    api_key_sid: Annotated[str, _sid("SK")] | None = None
    api_key_secret: Secret | None = None
    base_url: BaseUrl = "https://proxy.twilio.com"
    page_size: Annotated[int, _integer(1, 1000)] = 1000
    max_requests_per_second: Annotated[float, _number(high=MAX_REQUESTS_PER_SECOND)] = 25.0
    max_concurrency: Annotated[int, _integer(1, 256)] = 8
    timeout_seconds: Seconds = 20.0
    retry_deadline_seconds: Seconds = 120.0
    # Bounds on what Twilio may send (poller.twilio.body.AnswerLimits has the same defaults).
    max_page_bytes: Annotated[int, _integer(65_536, 1 << 30)] = 32 << 20
    max_pages: Annotated[int, _integer(1, 1_000_000)] = 1_000
    max_interactions_per_session: Annotated[int, _integer(1, 100_000_000)] = 50_000
    max_sessions_per_service: Annotated[int, _integer(1, 100_000_000)] = 100_000

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

    @model_validator(mode="after")
    def _warn_above_proxy_limit(self) -> TwilioConfig:
        # Validation is the one place every way of loading a config goes through.
        if self.above_proxy_limit:
            log.warning(
                "config_rate_above_proxy_limit",
                max_requests_per_second=self.max_requests_per_second,
                proxy_limit=PROXY_RATE_LIMIT,
            )
        return self

    @property
    def above_proxy_limit(self) -> bool:
        """True when the rate exceeds Twilio Proxy's 30/s (fine for a private proxy only)."""
        return self.max_requests_per_second > PROXY_RATE_LIMIT

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
    events: Annotated[tuple[str, ...], PlainValidator(_events)] = INTERACTION_EVENT_TYPES
    filter: SinkFilter | None = None
    include_data: bool = True


class WebhookSinkConfig(_SinkCommon):
    """An HTTP endpoint receiving Standard-Webhooks-signed JSON events."""

    type: Literal["webhook"]
    url: Annotated[str, PlainValidator(_target_url)]
    secret: Annotated[SecretStr, AfterValidator(_webhook_secret)] | None = None
    timeout_seconds: Seconds = 10.0
    headers: Annotated[dict[str, str], PlainValidator(_headers)] = Field(default_factory=dict)
    body_template: Annotated[str, PlainValidator(_body_template)] | None = None
    content_type: Annotated[str, PlainValidator(_content_type)] = "application/json"

    @model_validator(mode="after")
    def _template_renders_json(self) -> WebhookSinkConfig:
        if self.body_template is not None:
            from poller.config.templates import check_body_template

            check_body_template(self.body_template, self.events, include_data=self.include_data)
        return self


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


class TeamsSinkConfig(_SinkCommon):
    """A Microsoft Teams Workflows webhook receiving Adaptive Cards."""

    type: Literal["teams"]
    webhook_url: Annotated[SecretStr, AfterValidator(_slack_webhook_url)]
    digest_threshold: Annotated[int, _integer(1)] = 5
    timeout_seconds: Seconds = 10.0


class DiscordSinkConfig(_SinkCommon):
    """A Discord channel webhook receiving embeds."""

    type: Literal["discord"]
    webhook_url: Annotated[SecretStr, AfterValidator(_slack_webhook_url)]
    digest_threshold: Annotated[int, _integer(1)] = 5
    timeout_seconds: Seconds = 10.0


_SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}


class EmailSinkConfig(_SinkCommon):
    """An SMTP server relaying email to a list of addresses."""

    type: Literal["email"]
    smtp_host: Annotated[str, _text("a host name or address")]
    smtp_port: Annotated[int, _integer(1, 65535)] | None = None
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: Annotated[str, _text("a user name")] | None = None
    password: Secret | None = None
    sender: Annotated[str, PlainValidator(_email_address)] = Field(alias="from")
    to: Annotated[tuple[str, ...], PlainValidator(_email_addresses)]
    subject_template: Annotated[str, PlainValidator(_subject_template)] = (
        "[twilio-proxy-poller] {{ title }}"
    )
    digest_threshold: Annotated[int, _integer(1)] = 5
    timeout_seconds: Seconds = 30.0

    @model_validator(mode="after")
    def _both_credentials(self) -> EmailSinkConfig:
        if self.username is not None and self.password is None:
            raise _invalid("missing: username needs password", at=("password",), got=_NO_VALUE)
        if self.password is not None and self.username is None:
            raise _invalid("missing: password needs username", at=("username",), got=_NO_VALUE)
        return self

    @property
    def port(self) -> int:
        """``smtp_port``, else the usual port of ``security`` (587, 465 or 25)."""
        return self.smtp_port if self.smtp_port is not None else _SMTP_PORTS[self.security]


SinkConfig = Annotated[
    WebhookSinkConfig | SlackSinkConfig | TeamsSinkConfig | DiscordSinkConfig | EmailSinkConfig,
    Field(discriminator="type"),
]


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
