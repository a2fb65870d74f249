"""Container healthcheck: exit 0 when the poller's ``/healthz`` answers 200, else 1.

Standard library only, so the image needs no curl. The URL defaults to the port the image
EXPOSEs; set ``POLLER_HEALTHCHECK_URL`` when the config's ``http.listen`` uses another one.
Run by Docker's ``HEALTHCHECK`` inside the container, where 127.0.0.1 reaches the daemon
whether it listens on 127.0.0.1 or 0.0.0.0.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:9108/healthz"
TIMEOUT_SECONDS = 4.0


def check(url: str, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """Fetch ``url``; tell whether it answered 200, with a one-line reason."""
    if urlsplit(url).scheme not in ("http", "https"):
        return False, f"POLLER_HEALTHCHECK_URL must be http(s)://, got {url!r}"
    try:
        # The scheme is checked above: no file:// or other opener can be reached.
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"{url} unreachable: {exc}"
    return status == 200, f"{url} answered {status}"


def main() -> int:
    ok, reason = check(os.environ.get("POLLER_HEALTHCHECK_URL", DEFAULT_URL))
    print(reason, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
