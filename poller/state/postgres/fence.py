"""The fence: a write for a Service commits only if this replica still owns it at its epoch.

The lease keeper (``poller.replicas``) records here which Services this replica holds, at
which epoch, and until when its own monotonic clock trusts the lease (a fraction of the lease
after the renewal that confirmed it was sent: the replica stops in time even if the database
never answers again). The store checks the database's lease row inside every write
transaction for a Service (:func:`check`), locking it ``FOR SHARE``: a takeover (which
updates the row) waits for that transaction, and once it has committed the old owner's next
write fails. A replica woken after its lease was taken can therefore neither commit nor
acknowledge under its old epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from poller.errors import FencedError
from poller.state.postgres.db import Cursor


class Fence:
    """The leases this replica holds, as the lease keeper last confirmed them."""

    def __init__(self, replica: str, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.replica = replica
        self._monotonic = monotonic
        self._held: dict[str, tuple[int, float]] = {}  # service -> (epoch, trusted until)

    def hold(self, service_sid: str, epoch: int, trusted_until: float) -> None:
        """Record (or extend) a lease: ``trusted_until`` is on the monotonic clock."""
        self._held[service_sid] = (epoch, trusted_until)

    def drop(self, service_sid: str) -> None:
        self._held.pop(service_sid, None)

    def epoch(self, service_sid: str) -> int | None:
        """The epoch this replica holds the Service at (trusted now), or None."""
        held = self._held.get(service_sid)
        if held is None or self._monotonic() >= held[1]:
            return None
        return held[0]

    def owns(self, service_sid: str) -> bool:
        return self.epoch(service_sid) is not None

    def owned(self) -> dict[str, int]:
        """Every Service held and still trusted now, with its epoch."""
        now = self._monotonic()
        return {sid: epoch for sid, (epoch, until) in self._held.items() if now < until}

    def held(self) -> dict[str, int]:
        """Every Service recorded, trusted or not (what a clean stop releases)."""
        return {sid: epoch for sid, (epoch, _) in self._held.items()}


def owned_sids(fence: Fence | None) -> list[str] | None:
    """The Services a store may hand out and counts, by SID (None: every one, no fence)."""
    return None if fence is None else sorted(fence.owned())


async def check(cur: Cursor, fence: Fence | None, service_sids: Iterable[str]) -> None:
    """In the caller's transaction: raise FencedError unless each Service is still ours.

    ``fence`` None: an operator's command (no leases), which checks nothing.
    """
    if fence is None:
        return
    wanted = sorted(set(service_sids))
    if not wanted:
        return
    epochs = [fence.epoch(sid) for sid in wanted]
    lost = [sid for sid, epoch in zip(wanted, epochs, strict=True) if epoch is None]
    if lost:
        raise FencedError(_message(fence, lost), service_sids=tuple(lost))
    await cur.execute(
        "SELECT l.service_sid FROM leases AS l "
        "JOIN unnest(%s::text[], %s::bigint[]) AS f (sid, epoch) "
        "ON l.service_sid = f.sid AND l.epoch = f.epoch "
        "WHERE l.owner = %s AND l.expires_at > now() "
        "ORDER BY l.service_sid FOR SHARE OF l",
        (wanted, epochs, fence.replica),
    )
    confirmed = {str(row[0]) for row in await cur.fetchall()}
    lost = [sid for sid in wanted if sid not in confirmed]
    if lost:
        raise FencedError(_message(fence, lost), service_sids=tuple(lost))


def _message(fence: Fence, lost: list[str]) -> str:
    return (
        f"replica {fence.replica} no longer holds the lease of {', '.join(lost)}: "
        "the write was not made"
    )
