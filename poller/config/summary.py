"""The human summary of a validated configuration, for ``poller check-config``."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

from poller.config.models import (
    PROXY_RATE_LIMIT,
    Config,
    DiscordSinkConfig,
    EmailSinkConfig,
    SinkConfig,
    SlackSinkConfig,
    TeamsSinkConfig,
    WebhookSinkConfig,
)
from poller.config.secret import Secret


def _mask(secret: Secret | None) -> str:
    """``****`` and at most the last 4 characters (fewer for short secrets)."""
    if secret is None:
        return "none"
    text = secret.get_secret_value()
    keep = min(4, len(text) // 4)
    return "****" + (text[-keep:] if keep else "")


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _target(sink: TeamsSinkConfig | DiscordSinkConfig | EmailSinkConfig) -> tuple[str, str]:
    """Where a Teams, Discord or email sink sends, and its digest threshold."""
    if isinstance(sink, EmailSinkConfig):
        auth = (
            f"user {sink.username} password {_mask(sink.password)}" if sink.username else "no auth"
        )
        count = f"{len(sink.to)} address" + ("es" if len(sink.to) > 1 else "")
        target = f"smtp {sink.smtp_host}:{sink.port} ({sink.security}, {auth}) to {count}"
        return target, f"digest over {sink.digest_threshold}"
    return f"webhook {_mask(sink.webhook_url)}", f"digest over {sink.digest_threshold}"


def _sink_lines(sink: SinkConfig) -> list[str]:
    if isinstance(sink, TeamsSinkConfig | DiscordSinkConfig | EmailSinkConfig):
        target, extra = _target(sink)
    elif isinstance(sink, WebhookSinkConfig):
        signed = f"signed, secret {_mask(sink.secret)}" if sink.secret else "unsigned"
        target = f"{_host(sink.url)} ({signed})"
        extra = f"headers {', '.join(sink.headers) or 'none'}"
        extra += ", body template" if sink.body_template is not None else ""
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
        f"{field.name}={'|'.join(values)}"
        for field in dataclasses.fields(flt)
        if (values := getattr(flt, field.name))
    ]  # fmt: skip
    return [
        f"  {sink.name} ({sink.type}) -> {target}",
        f"    events {', '.join(sink.events)}; filter {' '.join(terms) or 'none'}; "
        f"include_data {str(sink.include_data).lower()}; timeout {sink.timeout_seconds:g}s; "
        f"{extra}",
    ]


def _state(config: Config) -> str:
    """The state file, or the database without its password and the replicas' lease."""
    state = config.state
    prune = f"prune gone sessions after {state.prune_after_seconds:g}s"
    if state.url is None:
        return f"state: {state.path} ({prune})"
    return f"state: {state.where} (PostgreSQL, leases of {state.lease_seconds:g}s; {prune})"


def _http(config: Config) -> str:
    if config.http is None:
        return "http: disabled"
    if config.http.auth is not None:
        auth = f"basic auth for {config.http.auth.username} {_mask(config.http.auth.password)}"
    elif config.http.loopback:
        auth = "no auth (loopback)"
    else:
        auth = "no auth: the status page is open to the network"
    return f"http: {config.http.listen}, status page at /, {auth}"


def summarize(config: Config) -> str:
    """A human summary for ``poller check-config``; secrets masked."""
    tw, poll, dl = config.twilio, config.poll, config.delivery
    if tw.auth_token is not None:
        auth = f"auth token {_mask(tw.auth_token)}"
    else:
        auth = f"API key {tw.api_key_sid} secret {_mask(tw.api_key_secret)}"
    rate = f"{tw.max_requests_per_second:g} requests/s per Service"
    if tw.above_proxy_limit:
        rate += (
            f" (above Twilio Proxy's {PROXY_RATE_LIMIT:g}/s:"
            " for a private proxy or the simulator only)"
        )
    lines = [
        f"twilio: {tw.base_url} account {tw.account_sid}, {auth}",
        f"  page_size {tw.page_size}, {rate}, "
        f"concurrency {tw.max_concurrency}, timeout {tw.timeout_seconds:g}s, "
        f"retry deadline {tw.retry_deadline_seconds:g}s",
        _state(config),
        f"poll: every {poll.interval_seconds:g}s, first_run {poll.first_run}, "
        f"settle {poll.settle_seconds:g}s, full sweep {poll.full_sweep_seconds:g}s, "
        f"timeout {poll.timeout_seconds:g}s",
        f"delivery: max {dl.max_attempts} attempts within {dl.max_age_seconds:g}s, backoff "
        f"{dl.initial_backoff_seconds:g}s to {dl.max_backoff_seconds:g}s, concurrency "
        f"{dl.concurrency}, shutdown {dl.shutdown_timeout_seconds:g}s, "
        f"once deadline {dl.once_deadline_seconds:g}s, "
        + (f"history {dl.history_seconds:g}s" if dl.history_seconds else "no history"),
        "watch:",
    ]
    for watch in config.watch:
        what = "all sessions" if watch.all_sessions else ", ".join(watch.sessions)
        lines.append(f"  {watch.service_sid}: {what}")
    lines.append("sinks:")
    for sink in config.sinks:
        lines += _sink_lines(sink)
    lines.append(_http(config))
    lines.append(f"log: format {config.log.format}, level {config.log.level}")
    return "\n".join(lines)
