"""The email sink against a real SMTP server (aiosmtpd on 127.0.0.1): TLS, auth, digest."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from poller.config import DeliveryConfig, EmailSinkConfig, parse_config
from poller.delivery.dispatcher import Dispatcher
from poller.delivery.policy import DeliveryPolicy
from poller.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    SinkDisabledError,
)
from poller.events import EventType
from poller.sinks.email import EmailSink
from tests.sink_bursts import HOSTILE, answers, burst, deliver
from tests.sink_contract_cases import MESSAGE_BODY, make_event
from tests.smtp_server import PASSWORD, USER, Running, client_context, self_signed, smtp_server
from tests.support import free_port

SENDER = "poller@example.test"
TO = ["oncall@example.test", "lead@example.test"]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp() -> Iterator[Running]:
    with smtp_server(security="none") as running:
        yield running


def email_sink(port: int, cert: Path | None = None, **extra: Any) -> EmailSink:
    config = EmailSinkConfig.model_validate(
        {
            "name": "mail",
            "type": "email",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "security": "none",
            "username": USER,
            "password": PASSWORD,
            "from": SENDER,
            "to": TO,
            **extra,
        }
    )
    return EmailSink(config, tls_context=client_context(cert) if cert else None)


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    page = message.get_body(preferencelist=("html",))
    assert text is not None
    assert page is not None
    return _lf(text.get_content()), _lf(page.get_content())


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


# -- what arrives --------------------------------------------------------------------------


async def test_an_event_arrives_as_text_and_html_with_auth_over_plain_smtp(smtp: Running) -> None:
    await email_sink(smtp.port).send(make_event())
    (message,) = smtp.mailbox.messages
    assert smtp.mailbox.logins == ["PLAIN"]
    assert smtp.mailbox.envelopes == [(SENDER, TO)]
    assert message["Subject"] == "[twilio-proxy-poller] New message"
    assert message["From"] == SENDER
    assert message["To"] == ", ".join(TO)
    text, page = _parts(message)
    assert f"> {MESSAGE_BODY}" in text
    assert "Outbound resource status: delivered" in text
    assert f"<blockquote>{MESSAGE_BODY}</blockquote>" in page


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_starttls_and_implicit_tls_carry_the_login_and_the_message(
    cert: tuple[Path, Path], security: str
) -> None:
    with smtp_server(security=security, cert=cert) as server:
        await email_sink(server.port, cert[0], security=security).send(make_event())
    assert len(server.mailbox.messages) == 1
    assert server.mailbox.logins == ["PLAIN"]


async def test_starttls_refuses_a_certificate_it_does_not_trust(cert: tuple[Path, Path]) -> None:
    with smtp_server(security="starttls", cert=cert) as server:
        sink = email_sink(server.port, security="starttls")  # the system's CAs only
        with pytest.raises(SinkDisabledError, match="certificate is not trusted"):
            await sink.send(make_event())
    assert server.mailbox.messages == []
    assert server.mailbox.logins == []


async def test_a_burst_of_300_arrives_as_one_digest(smtp: Running, tmp_path: Path) -> None:
    sink = email_sink(
        smtp.port, subject_template="{{ count }} Proxy events{% if digest %} (digest){% endif %}"
    )
    result, store = await deliver(sink, burst(300), tmp_path)
    await store.close()
    assert result.sinks["mail"].delivered == 300
    (message,) = smtp.mailbox.messages
    assert message["Subject"] == "300 Proxy events (digest)"
    text, page = _parts(message)
    assert text.startswith("300 events in 12 sessions\n")
    assert "New message: 300" in text
    assert text.count("\n- ") == 300
    assert page.count("<tr>") == 300


async def test_a_hostile_body_is_inert_in_email(smtp: Running) -> None:
    sink = email_sink(smtp.port, subject_template="{{ event.data.interaction.data }}")
    await sink.send(make_event(body=HOSTILE + "\r\nBcc: victim@example.test"))
    await sink.send_digest([make_event(body=HOSTILE) for _ in range(6)])
    assert len(smtp.mailbox.messages) == 2
    for message in smtp.mailbox.messages:
        _, page = _parts(message)
        assert "<script>" not in page
        assert "<a " not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    first = smtp.mailbox.messages[0]
    assert first["Bcc"] is None  # a body cannot add a header through the subject
    assert "\n" not in str(first["Subject"])
    assert smtp.mailbox.envelopes[0] == (SENDER, TO)


async def test_a_subject_template_that_fails_falls_back_to_the_default(smtp: Running) -> None:
    sink = email_sink(smtp.port, subject_template="{{ event.data.nothing.here }}")
    with capture_logs() as logs:
        await sink.send(make_event())
    assert smtp.mailbox.messages[0]["Subject"] == "[twilio-proxy-poller] New message"
    assert [e["event"] for e in logs] == ["email_subject_template_failed"]


# -- every answer classified -----------------------------------------------------------------

SMTP_ANSWERS = [
    ("RCPT", "451 4.3.0 Mailbox busy, try later", RetryableDeliveryError, 451, "try again later"),
    ("RCPT", "550 5.1.1 No such user", PermanentDeliveryError, 550, "refused the message"),
    ("DATA", "452 4.3.1 Insufficient storage", RetryableDeliveryError, 452, "try again later"),
    ("DATA", "554 5.6.0 Message rejected as spam", PermanentDeliveryError, 554, "dead-lettered"),
    ("DATA", "421 4.7.0 Closing", RetryableDeliveryError, 421, "try again later"),
]


@pytest.mark.parametrize(("step", "reply", "error", "code", "reason"), SMTP_ANSWERS)
async def test_every_smtp_reply_is_classified_with_a_reason_and_a_metric(
    smtp: Running, step: str, reply: str, error: type[DeliveryError], code: int, reason: str
) -> None:
    smtp.mailbox.script(step, reply, times=len(TO))
    outcome = "retry" if error is RetryableDeliveryError else "permanent"
    before = answers("mail", outcome, f"SMTP {code}")
    with pytest.raises(error, match=reason) as info:
        await email_sink(smtp.port).send(make_event())
    assert info.value.status == code
    assert answers("mail", outcome, f"SMTP {code}") == before + 1
    assert smtp.mailbox.messages == []


async def test_wrong_credentials_535_disable_the_sink(smtp: Running) -> None:
    with pytest.raises(SinkDisabledError, match="username or password") as info:
        await email_sink(smtp.port, password="not-the-password").send(make_event())
    assert info.value.status == 535
    assert "not-the-password" not in str(info.value)


async def test_a_server_that_is_down_is_retried() -> None:
    with pytest.raises(RetryableDeliveryError, match="connection failure"):
        await email_sink(free_port()).send(make_event())


async def test_starttls_against_a_server_without_it_disables_the_sink(smtp: Running) -> None:
    with pytest.raises(SinkDisabledError, match="does not offer STARTTLS"):
        await email_sink(smtp.port, security="starttls").send(make_event())
    assert smtp.mailbox.messages == []


# -- the contract through the dispatcher ---------------------------------------------------


async def test_a_451_is_retried_until_the_server_takes_the_message(
    smtp: Running, tmp_path: Path
) -> None:
    smtp.mailbox.script("DATA", "451 4.3.0 try later")
    sink = email_sink(smtp.port)
    result, store = await deliver(sink, [make_event()], tmp_path)
    assert result.sinks["mail"].failed == 1
    (pending,) = await store.due("mail", None, 10)
    assert pending.last_error is not None
    assert "SMTP 451" in pending.last_error
    again = await Dispatcher(store, [sink], DeliveryPolicy(DeliveryConfig())).run_once(
        ignore_timers=True
    )
    await store.close()
    assert again.sinks["mail"].delivered == 1
    assert len(smtp.mailbox.messages) == 1


async def test_a_refused_message_is_dead_lettered_at_once_with_its_reason(
    smtp: Running, tmp_path: Path
) -> None:
    smtp.mailbox.script("DATA", "554 5.7.1 rejected", times=1)
    result, store = await deliver(email_sink(smtp.port), [make_event()], tmp_path)
    (dead,) = await store.dead_letters("mail")
    await store.close()
    assert result.sinks["mail"].dead == 1
    assert dead.last_status == 554
    assert dead.last_error is not None
    assert "SMTP 554" in dead.last_error


async def test_a_message_still_refused_after_max_attempts_is_dead_lettered(
    smtp: Running, tmp_path: Path
) -> None:
    smtp.mailbox.script("DATA", "451 4.3.0 try later", times=2)
    sink = email_sink(smtp.port)
    first, store = await deliver(sink, [make_event()], tmp_path, max_attempts=2)
    second = await Dispatcher(
        store, [sink], DeliveryPolicy(DeliveryConfig(max_attempts=2))
    ).run_once(ignore_timers=True)
    (dead,) = await store.dead_letters("mail")
    await store.close()
    assert (first.sinks["mail"].failed, second.sinks["mail"].dead) == (1, 1)
    assert dead.last_status == 451
    assert smtp.mailbox.messages == []


# -- config ----------------------------------------------------------------------------------


def _config(sink: dict[str, Any]) -> dict[str, Any]:
    return {
        "twilio": {"account_sid": "AC" + "0" * 32, "auth_token": "t"},
        "watch": [{"service_sid": "KS" + "0" * 32, "all_sessions": True}],
        "sinks": [{"name": "mail", "type": "email", **sink}],
    }


BASE = {"smtp_host": "smtp.example.test", "from": SENDER, "to": TO}


def test_the_port_follows_security_and_password_file_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    config = parse_config(
        _config({**BASE, "security": "tls", "username": USER, "password_file": str(secret)}), {}
    )
    sink = config.sinks[0]
    assert isinstance(sink, EmailSinkConfig)
    assert sink.port == 465
    assert sink.password is not None
    assert sink.password.get_secret_value() == PASSWORD


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to": []}, "sinks[0].to: expected a non-empty list of email addresses"),
        ({"to": ["not-an-address"]}, "sinks[0].to[0]: expected an email address"),
        ({"from": "a@b.example\r\nBcc: x@y.example"}, "sinks[0].from: expected an email address"),
        ({"security": "ssl"}, "sinks[0].security: expected 'starttls', 'tls' or 'none'"),
        ({"username": USER}, "sinks[0].password: missing: username needs password"),
        ({"subject_template": "{% if %}"}, "sinks[0].subject_template: expected a valid Jinja2"),
        ({"sender": SENDER}, "sinks[0].sender: unknown key"),
        ({"form": SENDER}, "sinks[0].form: unknown key (did you mean from?)"),
        ({"pasword": "x"}, "sinks[0].pasword: unknown key (did you mean password?)"),
    ],
)
def test_bad_email_settings_are_one_line_config_errors(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config({**BASE, **change}), {})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


async def test_the_subject_sees_the_event_type_of_updates(smtp: Running) -> None:
    sink = email_sink(smtp.port, subject_template="{{ event.type }}: {{ title }}")
    await sink.send(make_event(event_type=EventType.UPDATED))
    assert smtp.mailbox.messages[0]["Subject"] == "interaction.updated: Message status changed"
