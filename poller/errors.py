"""The exception tree of the poller.

    PollerError
     +-- ConfigError            invalid configuration or unresolved secret (exit 2)
     +-- SourceError            talking to Twilio failed
     |    +-- CredentialsError      401/403: the credentials are wrong or lack permission
     |    +-- NotFoundError         404: the Service or Session is gone
     |    +-- RateLimitedError      429 after every retry within the deadline
     |    +-- TransientSourceError  5xx or transport failure after every retry within the deadline
     |    +-- MalformedResponseError  a body that is not the JSON the spec describes
     |    +-- ForeignURLError       a next_page_url outside twilio.base_url
     +-- StateError             the state (a SQLite file, or PostgreSQL)
     |    +-- StateLockedError      another process holds the state file
     |    +-- StateCorruptError     not a poller state file, or damaged (exit 2, file untouched)
     |    +-- StateUnavailableError the database cannot be reached (down, refused, timed out)
     |    +-- FencedError           a write for a Service whose lease this replica lost
     +-- DeliveryError          a sink did not accept an event
          +-- RetryableDeliveryError  try again later (5xx, 429, timeout, transport)
          +-- PermanentDeliveryError  never retry: dead-letter now (4xx, Slack's permanent errors)
          +-- SinkDisabledError       the receiver asked to stop (410 Gone): disable the sink

Messages name the thing, the value and what was expected; never a secret or a message body.
"""

from __future__ import annotations


class PollerError(Exception):
    """Base of every error the poller raises on purpose."""


class ConfigError(PollerError):
    """The configuration is invalid; the message names the key path and what was expected."""


class SourceError(PollerError):
    """A request to Twilio failed."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class CredentialsError(SourceError):
    """Twilio refused the credentials (401) or their permissions (403)."""


class NotFoundError(SourceError):
    """Twilio answered 404: the Service or Session does not exist (any more)."""


class RateLimitedError(SourceError):
    """Twilio kept answering 429 until the retry deadline passed."""


class TransientSourceError(SourceError):
    """5xx answers or transport errors lasted until the retry deadline passed."""


class MalformedResponseError(SourceError):
    """Twilio's answer was not the JSON the spec describes."""


class ForeignURLError(SourceError):
    """A next_page_url pointed outside twilio.base_url; it was not followed."""


class StateError(PollerError):
    """The state cannot be used."""


class StateLockedError(StateError):
    """Another process holds the exclusive lock on the state file."""


class StateCorruptError(StateError):
    """The state file is not a poller state file, or it is damaged."""


class StateUnavailableError(StateError):
    """The state's database cannot be reached now (down, restarting, refused, timed out)."""


class FencedError(StateError):
    """A write for a Service this replica no longer owns at its epoch: nothing was written."""

    def __init__(self, message: str, *, service_sids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.service_sids = service_sids


class DeliveryError(PollerError):
    """A sink did not accept an event."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableDeliveryError(DeliveryError):
    """The receiver may accept the event later; ``retry_after`` is its own hint in seconds."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The receiver will never accept this event: dead-letter it now."""


class SinkDisabledError(DeliveryError):
    """The receiver asked never to be called again (HTTP 410 Gone)."""
