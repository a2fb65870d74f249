"""A real SMTP server for the email sink's tests: aiosmtpd on 127.0.0.1, TLS with a fresh cert.

:func:`smtp_server` runs one in a thread of its own. It keeps every message it accepted
(:attr:`Mailbox.messages`, parsed), checks AUTH PLAIN/LOGIN against one user, and answers what
a test scripts (:meth:`Mailbox.script`) at ``RCPT`` or ``DATA``: ``"451 4.3.0 try later"``.
:func:`self_signed` writes a certificate for 127.0.0.1 that a test's client context trusts.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import ssl
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import free_port

USER = "poller@example.test"
PASSWORD = "smtp-password-never-logged-4d3c"


@dataclass
class Mailbox:
    """What the server received, and what it is told to answer next."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    _script: dict[str, deque[str]] = field(default_factory=dict)

    def script(self, step: str, reply: str, times: int = 1) -> None:
        """Answer the next ``times`` commands ``step`` (``RCPT`` or ``DATA``) with ``reply``."""
        self._script.setdefault(step, deque()).extend([reply] * times)

    def scripted(self, step: str) -> str | None:
        queue = self._script.get(step)
        return queue.popleft() if queue else None

    # aiosmtpd handler hooks ------------------------------------------------------------

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.scripted("RCPT")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.scripted("DATA")
        if reply is not None:
            return reply
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == USER
            and auth_data.password.decode() == PASSWORD
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself


@dataclass(frozen=True)
class Running:
    mailbox: Mailbox
    port: int


@contextmanager
def smtp_server(
    *, security: str = "none", cert: tuple[Path, Path] | None = None
) -> Iterator[Running]:
    """Run an SMTP server for ``security`` (none, starttls, tls); ``cert`` for the TLS ones."""
    mailbox = Mailbox()
    kwargs: dict[str, Any] = {
        "authenticator": mailbox.authenticate,
        # aiosmtpd counts only STARTTLS as TLS: implicit TLS must not hide AUTH either.
        "auth_require_tls": security == "starttls",
    }
    if security != "none":
        assert cert is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*cert)
        if security == "tls":
            kwargs["ssl_context"] = context
        else:
            kwargs["tls_context"] = context
            kwargs["require_starttls"] = True
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield Running(mailbox, port)
    finally:
        controller.stop()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """Write a certificate and key for 127.0.0.1 into ``folder``; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def client_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts only ``cert``."""
    return ssl.create_default_context(cafile=str(cert))
