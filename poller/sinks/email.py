"""The email sink: one message per event, or one digest for a burst, over SMTP (aiosmtplib).

``security``: ``starttls`` (connect in plain text, then ``STARTTLS`` before anything else;
refused when the server does not offer it), ``tls`` (TLS from the first byte, usually port
465) or ``none`` (plain text: a relay on the same host only). Certificates are verified.
Messages are built in :mod:`poller.sinks.email_message`.

How an answer is classified (the dispatcher decides what happens next; ``status`` is the SMTP
reply code):

    250 (every recipient, or some)   success (recipients refused are logged)
    4xx at any step (421, 450, 451, 452, ...)  retry
    timeout, connection refused or lost        retry
    530, 534, 535 (authentication)   disabled: the credentials are refused
    5xx at any other step (550, 552, 554, ...) permanent: dead-letter the message
    every recipient refused with 5xx permanent
    no STARTTLS or AUTH offered      disabled: the server cannot be used as configured
    certificate not trusted          disabled

Errors and logs name the sink and the reply code, never the password or a message.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from email.message import EmailMessage

import aiosmtplib
import structlog

from poller.config import EmailSinkConfig
from poller.errors import DeliveryError
from poller.events import Event
from poller.sinks.answers import Verdict, count_delivered, failure
from poller.sinks.email_message import build_message, compile_subject

log = structlog.get_logger(__name__)

AUTH_CODES = frozenset({530, 534, 535})


def verdict_for(code: int) -> Verdict:
    """What an SMTP reply code that refused the message means."""
    if code in AUTH_CODES:
        return "disabled", "the SMTP server refused the username or password"
    if 400 <= code < 500:
        return "retry", "the SMTP server asked to try again later"
    if 500 <= code < 600:
        return "permanent", "the SMTP server refused the message; it is dead-lettered"
    return "retry", "an unexpected SMTP reply"


class EmailSink:
    """Deliver events as email through one SMTP server."""

    def __init__(
        self, config: EmailSinkConfig, *, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.name = config.name
        self.include_data = config.include_data
        self.digest_threshold: int | None = config.digest_threshold
        self._config = config
        self._subject = compile_subject(config.subject_template)
        # Tests hand in a context that trusts their own certificate; else the system's CAs.
        self._tls_context = tls_context

    async def send(self, event: Event) -> None:
        """Send the message of ``event``."""
        await self._send([event])

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Send ONE message summarising ``events``."""
        await self._send(events)

    async def aclose(self) -> None:
        return None  # one connection per message: nothing stays open

    async def _send(self, events: Sequence[Event]) -> None:
        config = self._config
        message, fell_back = build_message(
            events,
            subject=self._subject,
            sender=config.sender,
            recipients=config.to,
            include_data=self.include_data,
        )
        if fell_back:
            log.warning("email_subject_template_failed", sink=self.name, events=len(events))
        try:
            refused = await self._deliver(message)
        except aiosmtplib.SMTPException as exc:
            raise self._failure(exc) from exc
        except (OSError, TimeoutError) as exc:  # DNS, refused connection, TLS handshake
            raise self._failure(exc) from exc
        if refused:
            log.warning("email_recipients_refused", sink=self.name, refused=len(refused))
        count_delivered(self.name)

    async def _deliver(self, message: EmailMessage) -> dict[str, object]:
        config = self._config
        smtp = aiosmtplib.SMTP(
            hostname=config.smtp_host,
            port=config.port,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=self._tls_context,
            timeout=config.timeout_seconds,
        )
        async with smtp:
            if config.username is not None and config.password is not None:
                await smtp.login(config.username, config.password.get_secret_value())
            errors, _ = await smtp.send_message(message)
        return dict(errors)

    def _failure(self, exc: BaseException) -> DeliveryError:
        answer, code, verdict = _classify(exc)
        return failure("email", self.name, answer, verdict, status=code)


def _classify(exc: BaseException) -> tuple[str, int | None, Verdict]:
    """Return (the answer in a few safe characters, the SMTP code, the verdict) of ``exc``."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        code = max(codes) if codes else 550
        return f"SMTP {code}", code, verdict_for(code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"SMTP {exc.code}", exc.code, verdict_for(exc.code)
    if isinstance(exc, TimeoutError):  # aiosmtplib's timeouts are TimeoutErrors too
        return "timeout", None, ("retry", "no answer from the SMTP server in time")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls", None, ("disabled", "the SMTP server's certificate is not trusted")
    if isinstance(exc, OSError):  # SMTPConnectError and SMTPServerDisconnected are OSErrors
        return "transport", None, ("retry", f"connection failure ({type(exc).__name__})")
    missing = _missing_extension(str(exc))
    if missing is not None:
        return "unsupported", None, ("disabled", f"the SMTP server does not offer {missing}")
    return "smtp", None, ("retry", f"an SMTP failure ({type(exc).__name__})")


def _missing_extension(text: str) -> str | None:
    """The extension aiosmtplib found missing ("STARTTLS", "AUTH"), from its error's text."""
    upper = text.upper()
    if "NOT SUPPORTED" not in upper:
        return None
    for extension in ("STARTTLS", "AUTH"):
        if extension in upper:
            return extension
    return "an extension the sink needs"
