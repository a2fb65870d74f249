"""Prometheus metrics of the poller, on a registry of its own.

Every module records through these objects; ``observe.health`` serves them on ``/metrics``.
Label values are bounded sets (outcomes, status classes, sink names from the config), never
session or interaction SIDs; the Service SIDs of the config are the one kind of SID a label takes.

In a process that serves no metrics (``poller once``: :mod:`poller.observe.recording`) each of
these is an :class:`Unrecorded`, which drops every record, and prometheus_client is not
imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poller.observe.recording import recording


class Unrecorded:
    """A metric of a process that serves none: it takes every record and keeps nothing."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def labels(self, *values: str, **labels: str) -> Unrecorded:
        return self

    def inc(self, amount: float = 1.0) -> None:
        pass

    def dec(self, amount: float = 1.0) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def remove(self, *values: str) -> None:
        pass


if TYPE_CHECKING or recording():
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    REGISTRY = CollectorRegistry(auto_describe=True)
else:
    Counter = Gauge = Histogram = Unrecorded
    REGISTRY = None

POLLS = Counter("poller_polls", "Polls of one session, by outcome.", ["outcome"], registry=REGISTRY)
POLL_DURATION = Histogram(
    "poller_poll_duration_seconds",
    "Time to poll one session (fetch every page, diff, commit).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
LAST_SUCCESSFUL_POLL = Gauge(
    "poller_last_successful_poll_timestamp_seconds",
    "Unix time of the last poll that succeeded.",
    registry=REGISTRY,
)
TWILIO_REQUESTS = Counter(
    "poller_twilio_requests",
    "Requests to Twilio, by HTTP status (or 'error' for transport failures).",
    ["status"],
    registry=REGISTRY,
)
TWILIO_RATE_LIMITED = Counter(
    "poller_twilio_rate_limited", "429 answers from Twilio.", registry=REGISTRY
)
TWILIO_BAD_RESPONSES = Counter(
    "poller_twilio_bad_responses",
    "Twilio answers that were not the JSON the spec describes, by kind.",
    ["kind"],
    registry=REGISTRY,
)
LAST_SERVICE_SUCCESS = Gauge(
    "poller_service_last_success_timestamp_seconds",
    "Unix time of the last cycle of a Service that succeeded, by Service (SIDs from the config).",
    ["service_sid"],
    registry=REGISTRY,
)
POLL_INTERVAL = Gauge(
    "poller_poll_interval_seconds",
    "The configured poll.interval_seconds (for alerts counted in intervals).",
    registry=REGISTRY,
)
EVENTS = Counter("poller_events", "Events produced, by type.", ["type"], registry=REGISTRY)
DELIVERIES = Counter(
    "poller_deliveries",
    "Delivery attempts, by sink and outcome (success, retry, dead, disabled).",
    ["sink", "outcome"],
    registry=REGISTRY,
)
SINK_ANSWERS = Counter(
    "poller_sink_answers",
    "Answers of the Teams, Discord and email destinations, by sink, outcome "
    "(delivered, retry, permanent, disabled) and answer (HTTP 429, SMTP 535, timeout, ...).",
    ["sink", "outcome", "answer"],
    registry=REGISTRY,
)
SINK_RATE_LIMITED = Counter(
    "poller_sink_rate_limited",
    "Answers of a destination that rate-limit its sink (HTTP 429, Slack's ratelimited), by sink.",
    ["sink"],
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    "poller_outbox_pending",
    "Deliveries waiting in the outbox, by sink.",
    ["sink"],
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "poller_outbox_oldest_age_seconds",
    "Age of the oldest pending delivery (0 when the outbox is empty).",
    registry=REGISTRY,
)
SINK_DISABLED = Gauge(
    "poller_sink_disabled",
    "1 while a sink is disabled (its destination is gone or refuses the credentials), by sink.",
    ["sink"],
    registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "poller_dead_letters", "Dead-lettered deliveries kept, by sink.", ["sink"], registry=REGISTRY
)
WATCHED_SESSIONS = Gauge(
    "poller_watched_sessions", "Sessions currently watched.", registry=REGISTRY
)
BASELINE_PENDING = Gauge(
    "poller_baseline_pending_sessions",
    "Watched sessions whose baseline is not fetched yet.",
    registry=REGISTRY,
)
CONFIG_ERRORS = Counter(
    "poller_config_errors", "Configs rejected at start or reload.", registry=REGISTRY
)
CLOCK_STEPS = Counter(
    "poller_clock_steps",
    "Steps of the wall clock the daemon noticed and corrected for (NTP steps, VM resumes).",
    registry=REGISTRY,
)
STATE_LOST = Counter(
    "poller_state_lost",
    "Times the state file vanished or was replaced under the daemon (it then exits).",
    registry=REGISTRY,
)
TEMPLATE_FAILURES = Counter(
    "poller_template_failures",
    "Template renders that failed or were cut short (the default message went instead).",
    ["sink", "reason"],
    registry=REGISTRY,
)
LEASES_HELD = Gauge(
    "poller_leases_held",
    "Leases of Services this replica holds and trusts now (several replicas on PostgreSQL).",
    registry=REGISTRY,
)
LEASE_CHANGES = Counter(
    "poller_lease_changes",
    "Leases this replica acquired, released or lost, by reason.",
    ["reason"],
    registry=REGISTRY,
)
HTTP_AUTH_REFUSED = Counter(
    "poller_http_auth_refused",
    "Requests to the status page or /api/status refused by http.auth, by reason.",
    ["reason"],
    registry=REGISTRY,
)
