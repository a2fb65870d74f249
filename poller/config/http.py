"""The listener's config: the status page, /api/status and the probes, and its basic auth."""

from __future__ import annotations

import re
from dataclasses import dataclass

from poller.config.fields import Model, model, optional, secret, setting
from poller.config.secret import Secret
from poller.config.validators import _listen, _secret_text, _split_listen, _text, is_loopback

_USERNAME = re.compile(r"[^:\s]{1,128}")


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class HttpAuthConfig(Model):
    """Basic auth in front of the status page and ``/api/status`` (probes stay open)."""

    username: str = setting(_text("a user name without ':'", _USERNAME))
    password: Secret = setting(secret(_secret_text))


@dataclass(frozen=True, slots=True, kw_only=True, repr=False, eq=False)
class HttpConfig(Model):
    """The listener of the status page, /api/status, /healthz, /readyz and /metrics."""

    listen: str = setting(_listen)
    auth: HttpAuthConfig | None = setting(optional(model(HttpAuthConfig)), default=None)

    @property
    def loopback(self) -> bool:
        """Whether the listener is reachable from this machine only."""
        return is_loopback(self.host)

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
