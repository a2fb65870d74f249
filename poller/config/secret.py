"""``Secret``: a string that never shows itself in a repr, a str() or a log line."""

from __future__ import annotations

from typing import Final

_MASK: Final = "**********"
# The config keys that hold a Secret; each also accepts ``X_file: PATH``.
SECRET_KEYS: frozenset[str] = frozenset(
    {"auth_token", "api_key_secret", "secret", "webhook_url", "token", "password"}
)


class Secret:
    """A secret value; ``get_secret_value()`` is the one way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """Return the secret itself, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
