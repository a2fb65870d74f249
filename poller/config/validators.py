"""Reusable field checks: numbers, SIDs, URLs, secrets, headers, templates, listen addresses.

Each raises :func:`~poller.config.messages._invalid` with what was expected; values that arrive
as strings from ``${ENV}`` interpolation are accepted wherever a number is.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from poller.config.messages import _NO_VALUE, _invalid
from poller.config.secret import Secret
from poller.events import EVENT_TYPES

if TYPE_CHECKING:
    import jinja2

_RESERVED_HEADERS = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


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


def _integer(low: int, high: int | None = None) -> Callable[[object], int]:
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

    return check


def _number(
    *, minimum: float = 0.0, inclusive: bool = False, high: float | None = None
) -> Callable[[object], float]:
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

    return check


def _sid(prefix: str) -> Callable[[object], str]:
    pattern = re.compile(rf"{prefix}[0-9a-fA-F]{{32}}")

    def check(value: object) -> str:
        if isinstance(value, str) and pattern.fullmatch(value):
            return value
        raise _invalid(f"expected {prefix} followed by 32 hex digits")

    return check


def _text(what: str, pattern: re.Pattern[str] | None = None) -> Callable[[object], str]:
    def check(value: object) -> str:
        usable = isinstance(value, str) and value and value.strip() == value
        if usable and (pattern is None or pattern.fullmatch(str(value))):
            return str(value)
        raise _invalid(f"expected {what}")

    return check


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


def _secret_text(value: Secret) -> Secret:
    text = value.get_secret_value()
    if not text or text.strip() != text:
        raise _invalid("expected a non-empty secret without surrounding whitespace")
    return value


def _webhook_secret(value: Secret) -> Secret:
    text = value.get_secret_value().removeprefix("whsec_")
    try:
        size = len(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        size = 0
    if not 24 <= size <= 64:
        raise _invalid("expected a Standard Webhooks secret: whsec_ + base64 of 24 to 64 bytes")
    return value


def _slack_webhook_url(value: Secret) -> Secret:
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


def _filter_values(
    check: Callable[[object], bool], what: str
) -> Callable[[object], tuple[str, ...] | None]:
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

    return validate


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


def compile_template(source: str) -> jinja2.Template:
    """Compile ``source`` in the one bounded sandbox of every template."""
    # Jinja2 costs more to import than the rest of the config: only configs with templates pay.
    from poller.sinks.templates import compile_template as compile_bounded

    return compile_bounded(source)


def _template(value: object) -> str:
    """Compile a Slack template (nothing of it runs), then render it on sample events, bounded."""
    import jinja2

    from poller.sinks.slack_template import MessageTemplate

    if not isinstance(value, str) or not value.strip():
        raise _invalid("expected a non-empty Jinja2 template string")
    try:
        template = MessageTemplate(value)
    except jinja2.TemplateSyntaxError as exc:
        message = " ".join(str(exc.message or "syntax error").split())
        raise _invalid(
            f"expected a valid Jinja2 template, line {exc.lineno}: {message}", got=_NO_VALUE
        ) from None
    try:
        template.check()
    except ValueError as exc:
        raise _invalid(f"expected a template that renders, but {exc}", got=_NO_VALUE) from None
    return value


_EMAIL = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\".]+")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;[ -~]*)?")


def _email_address(value: object) -> str:
    if isinstance(value, str) and _EMAIL.fullmatch(value):
        return value
    raise _invalid("expected an email address (name@example.com)")


def _email_addresses(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise _invalid("expected a non-empty list of email addresses")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _EMAIL.fullmatch(item):
            raise _invalid("expected an email address (name@example.com)", at=(index,), got=item)
    return tuple(value)


def _content_type(value: object) -> str:
    if isinstance(value, str) and _CONTENT_TYPE.fullmatch(value):
        return value
    raise _invalid("expected a media type such as application/json")


def _sandboxed_source(value: object, what: str) -> str:
    """Return ``value`` when it compiles in the new sinks' sandbox."""
    import jinja2

    from poller.sinks.templating import compile_sandboxed

    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"expected a non-empty Jinja2 {what}")
    try:
        compile_sandboxed(value)
    except jinja2.TemplateSyntaxError as exc:
        message = " ".join(str(exc.message or "syntax error").split())
        raise _invalid(
            f"expected a valid Jinja2 {what}, line {exc.lineno}: {message}", got=_NO_VALUE
        ) from None
    return value


def _subject_template(value: object) -> str:
    return _sandboxed_source(value, "subject template")


def _body_template(value: object) -> str:
    return _sandboxed_source(value, "body template")


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
    return (host, port) if 0 <= port <= 65535 else None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(value: object) -> str:
    if not isinstance(value, str) or _split_listen(value) is None:
        raise _invalid(
            "expected host:port (or [ipv6]:port) with a port from 0 (any free port) to 65535"
        )
    return value


def _state_path(value: object) -> Path:
    if isinstance(value, Path) or (isinstance(value, str) and value.strip()):
        return Path(value)
    raise _invalid("expected a file path")


def _postgres_url(value: Secret) -> Secret:
    url = value.get_secret_value()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres") or not rest.strip():
        raise _invalid("expected a postgresql://user@host:port/database URL", got=_NO_VALUE)
    return value


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``: safe in a message or a log."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>"
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    tail, _, _query = tail.partition("?")  # a query may hold password=...
    return f"{scheme}://{userinfo}{at}{hostport}{slash}{tail}"
