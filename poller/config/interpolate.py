"""Before validation: ``${NAME}`` from the environment, ``*_file`` secrets, the state path.

Each step works on the raw YAML data and raises :class:`_Problem` at a key path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from poller.config.messages import Loc, _short

# Which secrets accept X_file, per section ("sinks" by sink type; None: unknown type).
_TWILIO_FILE_SECRETS = ("auth_token", "api_key_secret")
_SINK_FILE_SECRETS: Mapping[str | None, tuple[str, ...]] = {
    "webhook": ("secret",),
    "slack": ("webhook_url", "token"),
    "teams": ("webhook_url",),
    "discord": ("webhook_url",),
    "email": ("password",),
    None: ("secret", "webhook_url", "token", "password"),
}


class _Problem(Exception):
    """A problem found before validation, at a key path."""

    def __init__(self, where: Loc, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(value: object, env: Mapping[str, str], where: Loc) -> object:
    if isinstance(value, str):
        return _substitute(value, env, where)
    if isinstance(value, Mapping):
        return {
            key: _interpolate(item, env, (*where, key if isinstance(key, str) else str(key)))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(item, env, (*where, i)) for i, item in enumerate(value)]
    return value


def _substitute(text: str, env: Mapping[str, str], where: Loc) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group(1)
        if name is None or not _ENV_NAME.fullmatch(name):
            raise _Problem(where, "expected ${NAME} (letters, digits, _) or $${ for a literal ${")
        if name not in env:
            raise _Problem(where, f"environment variable {name} is not set")
        return env[name]

    return _REFERENCE.sub(replace, text) if "${" in text else text


def _read_secret_files(data: dict[str, Any], base: Path | None, from_files: set[Loc]) -> None:
    state = data.get("state")
    if isinstance(state, dict):
        # A PostgreSQL URL may hold its password: state.url_file, as a secret.
        data["state"] = _secret_files(state, ("url",), ("state",), base, from_files)
    twilio = data.get("twilio")
    if isinstance(twilio, dict):
        data["twilio"] = _secret_files(twilio, _TWILIO_FILE_SECRETS, ("twilio",), base, from_files)
    http = data.get("http")
    auth = http.get("auth") if isinstance(http, dict) else None
    if isinstance(http, dict) and isinstance(auth, dict):
        http["auth"] = _secret_files(auth, ("password",), ("http", "auth"), base, from_files)
    sinks = data.get("sinks")
    if isinstance(sinks, list):
        for i, sink in enumerate(sinks):
            if isinstance(sink, dict):
                kind = sink.get("type")
                keys = _SINK_FILE_SECRETS.get(kind if isinstance(kind, str) else None)
                keys = _SINK_FILE_SECRETS[None] if keys is None else keys
                sinks[i] = _secret_files(sink, keys, ("sinks", i), base, from_files)


def _secret_files(
    section: dict[str, Any],
    keys: tuple[str, ...],
    where: Loc,
    base: Path | None,
    from_files: set[Loc],
) -> dict[str, Any]:
    out = dict(section)
    for key in keys:
        file_key = f"{key}_file"
        if file_key not in out:
            continue
        if key in out:
            raise _Problem((*where, file_key), f"expected {key} or {file_key}, not both")
        name = out.pop(file_key)
        if not isinstance(name, str) or not name.strip():
            raise _Problem((*where, file_key), f"expected a file path, got {_short(name)}")
        out[key] = _read_secret((*where, file_key), name, base)
        from_files.add((*where, key))
    return out


def _read_secret(where: Loc, name: str, base: Path | None) -> str:
    path = Path(name)
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _Problem(where, f"expected UTF-8 text in secret file {str(path)!r}") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _Problem(where, f"cannot read secret file {str(path)!r}: {reason}") from None
    text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not text:
        raise _Problem(where, f"secret file {str(path)!r} is empty")
    return text


def _anchor_state_path(data: dict[str, Any], base: Path | None) -> None:
    """Make a relative ``state.path`` (also the default) relative to the config's folder.

    A PostgreSQL state (``state.url``) has no path: naming both is an error.
    """
    state = data.get("state", {})
    if not isinstance(state, dict):
        return
    if "url" in state:
        if "path" in state:
            raise _Problem(("state", "path"), "expected state.path or state.url, not both")
        return
    if base is None:
        return
    path = state.get("path", "state.db")
    if isinstance(path, str) and path.strip() and not Path(path).is_absolute():
        data["state"] = {**state, "path": str(base / path)}
