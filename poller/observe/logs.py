"""structlog configuration: JSON or console lines, stdlib logging routed through, secrets masked.

Every line, whether logged through structlog or through the stdlib ``logging`` of a library
(httpx, apscheduler, aiohttp), goes through one handler on the root logger and one
``ProcessorFormatter``, so all of them share a format. Redaction runs last before rendering,
after tracebacks became text, so it also sees exception messages.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Literal, TextIO

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.types import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console", "auto"]

REDACTED = "[REDACTED]"

LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Libraries that log every request (httpx logs full URLs at INFO): WARNING and above only.
QUIET_LIBRARIES = ("httpx", "httpcore", "apscheduler", "aiohttp", "hpack")

_SECRET_KEYS = frozenset(
    {
        "auth_token",
        "token",
        "secret",
        "password",
        "authorization",
        "proxy_authorization",
        "api_key_secret",
        "webhook_url",
        "webhook_signature",
        "body",
        "data",
        "cookie",
        "set_cookie",
        "credentials",
    }
)
_SECRET_SUFFIXES = ("_token", "_secret", "_password")

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Userinfo of any URL; greedy up to the last "@" of the authority.
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^\s/?#]*@"), r"\1***@"),
    (re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s\"'<>]+"), r"\1***"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_\-]+"), "whsec_***"),
    (re.compile(r"\b(xox[a-z]|xapp)-[A-Za-z0-9\-]+"), r"\1-***"),
    (re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9+/=._~\-]{8,}", re.IGNORECASE), r"\1 ***"),
)

_MAX_DEPTH = 8


def is_secret_key(key: object) -> bool:
    """Tell whether a field named ``key`` holds a secret or a message body."""
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def scrub_text(text: str) -> str:
    """Mask credentials in URLs, Slack webhook URLs and token-shaped substrings of ``text``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub(value: object, depth: int) -> object:
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {
                k: REDACTED if is_secret_key(k) else _scrub(v, depth + 1) for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            scrubbed = [_scrub(item, depth + 1) for item in value]
            return tuple(scrubbed) if isinstance(value, tuple) else scrubbed
    # Renderers would repr() it anyway: keep the object unless its repr leaks something.
    text = repr(value)
    clean = scrub_text(text)
    return value if clean == text else clean


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Mask secret-named fields anywhere in the event and secret-shaped text in every string."""
    return {
        key: REDACTED if is_secret_key(key) else _scrub(value, 0)
        for key, value in event_dict.items()
    }


_HEAD_KEYS = ("timestamp", "level", "event", "logger")


def _order_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict[key] for key in _HEAD_KEYS if key in event_dict}
    ordered.update((k, v) for k, v in event_dict.items() if k not in ordered)
    return ordered


class _PollerHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one root handler ``configure_logging`` installs (and replaces on a second call)."""


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _formatter(console: bool, colors: bool) -> structlog.stdlib.ProcessorFormatter:
    renderer: Processor
    if console:
        # Plain text traceback (never locals), made a string first so redaction sees it.
        tracebacks: Processor = ExceptionRenderer()
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
    else:
        tracebacks = ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        renderer = structlog.processors.JSONRenderer()
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            tracebacks,
            redact,
            _order_keys,
            renderer,
        ],
    )


def configure_logging(format: LogFormat, level: str, *, stream: TextIO | None = None) -> None:
    """Send every log line to ``stream`` (stderr) as JSON or console text at ``level``.

    Safe to call again (on reload): the previous handler is replaced, not duplicated.
    """
    numeric = LEVELS.get(level.lower())
    if numeric is None:
        expected = ", ".join(LEVELS)
        raise ValueError(f"log level: expected one of {expected}, got {level!r}")
    out = sys.stderr if stream is None else stream
    tty = _is_tty(out)
    console = format == "console" or (format == "auto" and tty)

    handler = _PollerHandler(out)
    handler.setFormatter(_formatter(console, colors=tty))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _PollerHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        # Loggers already used must follow a reconfiguration (and capture_logs in tests).
        cache_logger_on_first_use=False,
    )
