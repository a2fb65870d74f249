"""A minimal receiver for twilio-proxy-poller webhooks: verify, deduplicate, print, answer.

    python examples/receiver.py --port 8000 --secret whsec_...
    WEBHOOK_SECRET=whsec_... python examples/receiver.py --port 8000   # keeps it out of `ps`

Needs the standard library and the ``standardwebhooks`` package only. For every ``POST`` it:

1. checks the Standard Webhooks signature over the exact bytes received, and that
   ``webhook-timestamp`` is within 5 minutes of this machine's clock (the tolerance the
   ``standardwebhooks`` package enforces): otherwise ``401``;
2. drops a ``webhook-id`` it has already accepted (the poller delivers at least once; a retry of
   an event carries the same id): ``204`` without printing it again;
3. prints one line per event (never the message body) and answers ``204``.

Answers are 2xx only once the event is handled: any other answer makes the poller retry. A real
receiver should store the ids it has handled durably, in the same transaction as its own work;
this one keeps the last ``--remember`` ids in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import (
    EmptyWebhookSecretError,
    Webhook,
    WebhookVerificationError,
)

MAX_BODY_BYTES = 1024 * 1024


class SeenIds:
    """The last ``capacity`` accepted ``webhook-id`` values, safe to share between threads."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, webhook_id: str) -> bool:
        """Remember ``webhook_id``; return False when it was already there."""
        with self._lock:
            if webhook_id in self._ids:
                self._ids.move_to_end(webhook_id)
                return False
            self._ids[webhook_id] = None
            if len(self._ids) > self._capacity:
                self._ids.popitem(last=False)
            return True


def describe(webhook_id: str, event: Mapping[str, Any]) -> str:
    """Return the one line printed for an event: what changed, where; never the message body."""
    data = event.get("data")
    data = data if isinstance(data, Mapping) else {}
    interaction = data.get("interaction")
    interaction = interaction if isinstance(interaction, Mapping) else {}
    parts = [
        str(event.get("type")),
        f"id={webhook_id}",
        f"at={event.get('timestamp')}",
        f"session={data.get('session_sid')}",
        f"interaction={interaction.get('sid')}",
        f"kind={interaction.get('type')}",
        f"inbound={interaction.get('inbound_resource_status')}",
        f"outbound={interaction.get('outbound_resource_status')}",
    ]
    changes = data.get("changes")
    if isinstance(changes, Mapping):
        for name, change in changes.items():
            if isinstance(change, Sequence) and len(change) == 2:
                parts.append(f"{name}:{change[0]}->{change[1]}")
    return " ".join(parts)


class Handler(BaseHTTPRequestHandler):
    """Answer each ``POST`` as the module docstring says; the server holds the shared parts."""

    server: ReceiverServer

    def do_POST(self) -> None:
        length = self.headers.get("content-length")
        if length is None or not length.isdigit():
            self._answer(411, "Content-Length required")
            return
        if int(length) > MAX_BODY_BYTES:
            self._answer(413, "body too large")
            return
        body = self.rfile.read(int(length))
        headers = {name.lower(): value for name, value in self.headers.items()}
        webhook_id = headers.get("webhook-id", "")
        try:
            self.server.webhook.verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError: a malformed signature header, or a body that is not UTF-8 text.
            self._reject(401, webhook_id, f"signature not verified ({exc})")
            return
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self._reject(400, webhook_id, "the body is not a JSON object")
            return
        if self.server.seen.add(webhook_id):
            with self.server.output_lock:
                print(describe(webhook_id, event), flush=True)
        else:
            with self.server.output_lock:
                print(f"duplicate ignored: id={webhook_id}", file=sys.stderr, flush=True)
        self._answer(204)

    def _reject(self, status: int, webhook_id: str, reason: str) -> None:
        line = f"rejected {status}: id={webhook_id or '-'}: {reason}"
        with self.server.output_lock:
            print(line, file=sys.stderr, flush=True)
        self._answer(status, reason)

    def _answer(self, status: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(status)
        if status != 204:
            self.send_header("content-type", "text/plain; charset=utf-8")
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        if status != 204:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep quiet: every request already gets one line of its own."""


class ReceiverServer(ThreadingHTTPServer):
    """An HTTP server holding the verifier, the ids seen and the output lock."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], webhook: Webhook, seen: SeenIds) -> None:
        super().__init__(address, Handler)
        self.webhook = webhook
        self.seen = seen
        self.output_lock = threading.Lock()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    parser.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET"),
        help="the sink's secret, whsec_... (default: $WEBHOOK_SECRET)",
    )
    parser.add_argument(
        "--remember", type=int, default=100_000, help="webhook ids kept for deduplication"
    )
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("a secret is required: --secret whsec_... or WEBHOOK_SECRET")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        webhook = Webhook(args.secret)
    except (ValueError, EmptyWebhookSecretError):  # not base64 (binascii.Error), or empty
        print("receiver: the secret is not a Standard Webhooks secret", file=sys.stderr)
        return 2
    # SIGTERM stops serving the way Ctrl-C does (set before the port opens).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = ReceiverServer((args.host, args.port), webhook, SeenIds(args.remember))
    host, port = server.server_address[:2]
    print(f"listening on http://{host!s}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
