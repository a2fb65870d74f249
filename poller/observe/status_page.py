"""The status page: a ``StatusSnapshot`` rendered as one HTML document, on the server.

One renderer: ``/static/status.js`` fetches the page again every few seconds and swaps its
``<main>``, so the refresh shows exactly what a reload would. Every value that came from the
state, Twilio or a receiver goes through ``html.escape``: text from outside is inert.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence

from poller.observe.status import ServiceStatus, SinkStatus, StatusSnapshot
from poller.state.models import Lease
from poller.state.views import AttemptRecord

REFRESH_SECONDS = 5


def render_page(snapshot: StatusSnapshot) -> str:
    """Return the whole page (a document with its ``<main>``)."""
    title = f"poller {snapshot.version}"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} status</title>"
        '<link rel="stylesheet" href="/static/status.css">'
        f'<script src="/static/status.js" defer data-refresh="{REFRESH_SECONDS}"></script>'
        "</head><body>"
        f"<header><h1>{_e(title)}</h1></header>\n"
        f"{render_main(snapshot)}\n"
        "</body></html>\n"
    )


def render_main(snapshot: StatusSnapshot) -> str:
    """Return the page's ``<main>``: what the refresh swaps."""
    now = snapshot.generated_at
    parts = [
        f'<main data-generated-at="{snapshot.generated_at:.3f}">',
        _about(snapshot),
        "<h2>Services</h2>",
        _services(snapshot.services, now),
        "<h2>Sinks</h2>",
        _sinks_table(snapshot.sinks, now),
        *(_attempts(sink, now) for sink in snapshot.sinks),
    ]
    if snapshot.leases is not None:
        parts += ["<h2>Leases</h2>", _leases(snapshot.leases, snapshot.replicas)]
    parts.append("</main>")
    return "\n".join(parts)


def _about(snapshot: StatusSnapshot) -> str:
    items = [
        ("generated", _utc(snapshot.generated_at)),
        ("state", snapshot.backend),
    ]
    if snapshot.replica is not None:
        items.append(("replica", snapshot.replica))
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f'<dl class="about">{cells}</dl>'


def _services(services: Sequence[ServiceStatus], now: float) -> str:
    rows = []
    for service in services:
        cycle = service.cycle
        if cycle is None:
            last = ["never", "", "", ""]
            state = "waiting"
        else:
            last = [_ago(cycle.at, now), str(cycle.polled), str(cycle.failed), cycle.error or ""]
            state = "ok" if cycle.succeeded else "failed"
        baseline = f"{service.baselined} done, {service.baseline_left} left"
        rows.append(
            _row(
                [service.service_sid, state, *last, str(service.sessions), baseline],
                attrs=f' data-service="{_e(service.service_sid)}" class="{state}"',
            )
        )
    header = ["Service", "state", "last cycle", "polled", "failed", "error", "sessions"]
    return _table([*header, "baseline"], rows, empty="no Service is watched")


def _sinks_table(sinks: Sequence[SinkStatus], now: float) -> str:
    rows = []
    for sink in sinks:
        age = sink.oldest_pending_age_seconds
        disabled = sink.disabled
        state = "ok"
        note = ""
        if disabled is not None:
            state = "disabled"
            status = "" if disabled.status is None else f"{disabled.status} "
            note = f"since {_utc(disabled.since)}: {status}{disabled.reason}"
        elif sink.failing is not None:
            state = "retrying"
            failing = sink.failing
            # The status says it shortest; the error's one line names the sink again.
            last = failing.last_error if failing.last_status is None else failing.last_status
            note = f"{failing.deliveries} failed, {failing.attempts} attempts, last: {last}"
        elif sink.dead:
            state = "dead letters"
        cells = [
            (sink.name, ""),
            (sink.type, ""),
            (state, ' data-field="state"'),
            (str(sink.pending), ' data-field="pending"'),
            ("" if age is None else _duration(age), ' data-field="oldest"'),
            (str(sink.dead), ' data-field="dead"' + (' class="bad"' if sink.dead else "")),
            (note, ' data-field="note"'),
        ]
        body = "".join(f"<td{attrs}>{_e(text)}</td>" for text, attrs in cells)
        css = "ok" if state == "ok" else "failed"
        rows.append(f'<tr data-sink="{_e(sink.name)}" class="{css}">{body}</tr>')
    header = ["sink", "type", "state", "pending", "oldest pending", "dead letters", "why"]
    return _table(header, rows, empty="no sink is configured")


def _attempts(sink: SinkStatus, now: float) -> str:
    rows = [_attempt_row(attempt, now) for attempt in sink.attempts]
    header = ["when", "event", "session", "outcome", "status", "latency", "error"]
    return (
        f'<details data-attempts="{_e(sink.name)}"><summary>{_e(sink.name)}: '
        f"last {len(sink.attempts)} attempts</summary>"
        f"{_table(header, rows, empty='no attempt kept')}</details>"
    )


def _attempt_row(attempt: AttemptRecord, now: float) -> str:
    cells = [
        _ago(attempt.at, now),
        attempt.event_id,
        attempt.session_sid,
        attempt.outcome,
        "" if attempt.status is None else str(attempt.status),
        f"{attempt.latency_seconds * 1000:.0f} ms",
        attempt.error or "",
    ]
    css = "ok" if attempt.outcome == "delivered" else "failed"
    return _row(cells, attrs=f' class="{css}"')


def _leases(leases: Sequence[Lease], replicas: Sequence[str]) -> str:
    rows = []
    for lease in leases:
        left = "" if lease.expires_in is None else _duration(lease.expires_in)
        rows.append(_row([lease.service_sid, lease.owner or "(none)", str(lease.epoch), left]))
    table = _table(["Service", "owner", "epoch", "expires in"], rows, empty="no lease")
    seen = ", ".join(replicas) or "(none)"
    return f'{table}<p class="replicas">replicas seen: {_e(seen)}</p>'


def _table(header: Sequence[str], rows: Sequence[str], *, empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _row(cells: Iterable[str], *, attrs: str = "") -> str:
    return f"<tr{attrs}>" + "".join(f"<td>{_e(cell)}</td>" for cell in cells) + "</tr>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


def _ago(at: float, now: float) -> str:
    return f"{_duration(max(0.0, now - at))} ago"


def _duration(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``2h 10m``, ``3d 4h``: short enough for a phone's column."""
    whole = int(max(0.0, seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
