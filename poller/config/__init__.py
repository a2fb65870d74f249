"""Configuration: YAML -> validated, frozen dataclasses.

:func:`load_config` reads the file, replaces ``${NAME}`` references from the environment, reads
``*_file`` secrets, validates, and turns the first problem into a one-line :class:`ConfigError`
such as ``poller.yaml: twilio.page_size: expected an integer from 1 to 1000, got 0``.
Messages never carry a secret: a secret key's value is shown as ``<hidden>``.

The modules: ``models.py`` (the dataclasses), ``fields.py`` (how a dataclass is read from YAML
data, field by field), ``validators.py`` (the checks of single values), ``secret.py`` (``Secret``),
``interpolate.py`` (``${ENV}`` and ``*_file`` secrets, before validation), ``loader.py``
(``load_config``, ``parse_config`` and the one-line errors, with ``messages.py``) and
``summary.py`` (``summarize``). ``INTERACTION_TYPES`` and ``RESOURCE_STATUSES`` (the spec's enums)
are importable from here too, though not in ``__all__``.
"""

from __future__ import annotations

from poller.config.http import HttpAuthConfig, HttpConfig
from poller.config.loader import load_config, parse_config
from poller.config.models import INTERACTION_TYPES as INTERACTION_TYPES
from poller.config.models import RESOURCE_STATUSES as RESOURCE_STATUSES
from poller.config.models import (
    SECRET_KEYS,
    Config,
    DeliveryConfig,
    DiscordSinkConfig,
    EmailSinkConfig,
    LogConfig,
    PollConfig,
    SinkConfig,
    SinkFilter,
    SlackSinkConfig,
    StateConfig,
    TeamsSinkConfig,
    TwilioConfig,
    WatchConfig,
    WebhookSinkConfig,
)
from poller.config.secret import Secret
from poller.config.summary import summarize
from poller.config.validators import compile_template

__all__ = [
    "SECRET_KEYS",
    "Config",
    "DeliveryConfig",
    "DiscordSinkConfig",
    "EmailSinkConfig",
    "HttpAuthConfig",
    "HttpConfig",
    "LogConfig",
    "PollConfig",
    "Secret",
    "SinkConfig",
    "SinkFilter",
    "SlackSinkConfig",
    "StateConfig",
    "TeamsSinkConfig",
    "TwilioConfig",
    "WatchConfig",
    "WebhookSinkConfig",
    "compile_template",
    "load_config",
    "parse_config",
    "summarize",
]
