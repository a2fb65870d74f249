"""``Leaser``: the lease keeper of one replica on a PostgreSQL state.

Every third of ``lease_seconds`` (and at once when another replica releases a lease) one
round, on the lease table's own connection: say this replica is alive, renew what it holds,
then take free Services up to its fair share or give one up to a replica below it
(``share.plan``). What it holds is written to the ``Fence`` the store checks: a renewal sent
at ``t0`` (this process's monotonic clock, read before sending) is trusted until
``t0 + 2/3 * lease_seconds``, so a replica whose renewals stop (a pause, a cut-off network, a
database down) stops polling and delivering well before the database lets another replica
take the lease, whatever the clocks of the database and of the replicas say.

A round never raises: the database down is said once per interval (``Outage``) and the round
is tried again; leases whose trust ran out are lost (``lease_lost`` reason ``unavailable``)
and, once the database answers, renewed if still ours or acquired anew under a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

import structlog

from poller.errors import StateError
from poller.observe.metrics import LEASE_CHANGES, LEASES_HELD
from poller.observe.outage import Outage
from poller.replicas.base import OnChange, Ownership, Settle
from poller.replicas.share import plan
from poller.state.postgres.db import describe
from poller.state.postgres.fence import Fence
from poller.state.postgres.leases import LeaseTable

log = structlog.get_logger(__name__)

TRUST = 2 / 3  # of lease_seconds after the renewal was sent
# A hand-over waits at most this long (and half a lease) for our work on the Service to end.
SETTLE_SECONDS = 5.0
ROUNDS_PER_LEASE = 3


class Leaser(Ownership):
    """Keeps this replica's leases in PostgreSQL and tells the ``Fence`` and the daemon."""

    def __init__(
        self,
        table: LeaseTable,
        fence: Fence,
        replica: str,
        lease_seconds: float,
        interval_seconds: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        outage: Outage | None = None,
    ) -> None:
        """``outage``: the one the daemon reports to (an outage is one line, whoever sees it)."""
        if fence.replica != replica:
            raise ValueError(f"the fence is replica {fence.replica}'s, not {replica}'s")
        self.replica = replica
        self.table = table
        self.fence = fence
        self.lease_seconds = float(lease_seconds)
        self._period = self.lease_seconds / ROUNDS_PER_LEASE
        self._next_round = 0.0  # on the event loop's clock
        self._monotonic = monotonic
        self._outage = (
            outage if outage is not None else Outage(interval_seconds, monotonic=monotonic)
        )
        self._services: frozenset[str] = frozenset()  # what is leased: watched + orphans
        self._watched: frozenset[str] = frozenset()  # the config's
        self._on_change: OnChange = _ignore
        self._settle: Settle | None = None
        self._handovers: set[asyncio.Future[None]] = set()
        self._owned: set[str] = set()  # what on_change was last told is owned
        self._unwatched: dict[str, int] = {}  # leases to release: no longer watched
        self._free_since: dict[str, float] = {}
        self._kept: set[str] = set()  # taken beyond the share: left free by the others
        self._reachable = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._first: asyncio.Future[None] | None = None  # start()'s round
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # rounds done (tests wait on it)

    def owns(self, service_sid: str) -> bool:
        return self.fence.owns(service_sid)

    @property
    def reachable(self) -> bool:
        return self._reachable

    async def start(
        self, services: Sequence[str], on_change: OnChange, settle: Settle | None = None
    ) -> None:
        if self._first is not None or self._stopping:
            return
        self._watched = self._services = frozenset(services)
        self._on_change = on_change
        self._settle = settle
        self._next_round = asyncio.get_running_loop().time() + self._period
        self._first = asyncio.ensure_future(self._safe_round())
        await self._first
        if not self._stopping:  # stop() may have come during the first round
            self._task = asyncio.create_task(self._run(), name=f"leaser-{self.replica}")

    async def set_services(self, services: Sequence[str]) -> None:
        self._watched = frozenset(services)
        self._give_up_all_but(self._watched)
        self._wake.set()  # release those and take the new ones now

    def _give_up_all_but(self, services: frozenset[str]) -> None:
        """Lease only ``services`` from now on: the others held are released next round."""
        self._services = services
        for sid, epoch in self.fence.held().items():
            if sid not in self._services:
                self.fence.drop(sid)
                self._unwatched[sid] = epoch
                self._lose(sid, epoch, None)

    async def _with_orphans(self) -> None:
        """Lease the watched Services and any other with deliveries pending.

        A Service removed from the config keeps its pending deliveries (they still go out, as
        on SQLite): somebody must own it until they have, then it is released as unwatched.
        """
        orphans = await self.table.pending_elsewhere(self._watched)
        self._give_up_all_but(self._watched | frozenset(orphans))

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        # A round ends within its timeout, the pause at once, a hand-over within half a lease.
        await asyncio.gather(*(t for t in (self._first, self._task) if t), return_exceptions=True)
        await asyncio.gather(*self._handovers, return_exceptions=True)
        try:
            async with asyncio.timeout(self._period):
                await self._release_all()
        except (StateError, TimeoutError) as exc:
            # Not released: the leases expire on their own (the fence no longer trusts them).
            log.warning("lease_release_failed", replica=self.replica, error=_error(exc))
        for sid, epoch in self.fence.held().items():
            self.fence.drop(sid)
            self._lose(sid, epoch, None)
        self._reachable = False
        LEASES_HELD.set(0)
        await self.table.close()

    async def _run(self) -> None:
        """A round every third of the lease, counted from the start of the previous one."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await self._pause(self._next_round - loop.time())
            if not self._stopping:
                self._next_round = loop.time() + self._period
                await self._safe_round()

    async def _safe_round(self) -> None:
        """One round within a third of the lease; failures are said, never raised."""
        try:
            async with asyncio.timeout(self._period):
                await self._round()
        except (StateError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                await self.table.reset()  # a statement may be left running on it
            self._reachable = False
            self._outage.report(_error(exc), replica=self.replica, location=self.table.location)
        except Exception as exc:  # a bug: said, and the next round runs (leases lapse safely)
            await self.table.reset()
            self._reachable = False
            log.error(
                "lease_round_failed",
                replica=self.replica,
                error=str(exc),
                error_type=type(exc).__name__,
            )
        else:
            self._reachable = True
            self._outage.over(replica=self.replica)
        finally:
            self._lapse()
            self.rounds += 1
            LEASES_HELD.set(len(self._owned))

    async def _round(self) -> None:
        ttl = self.lease_seconds
        await self.table.heartbeat(self.replica, ttl)
        await self._with_orphans()
        await self._release_unwatched()
        await self._renew()
        live = await self.table.live_replicas()
        free = await self.table.free(self._services)
        left = self._note_free(free)
        owned = set(self.fence.owned())
        self._kept &= owned
        decision = plan(self.replica, owned, live, len(self._services), free, left, self._kept)
        if decision.release:
            held = self.fence.held()
            await self._release({sid: held[sid] for sid in decision.release}, "rebalance")
            return
        await self._acquire(decision.candidates, decision.take, left)

    async def _renew(self) -> None:
        held = self.fence.held()
        if not held:
            return
        t0 = self._monotonic()
        renewed = await self.table.renew(self.replica, held, self.lease_seconds)
        lost = {sid: epoch for sid, epoch in held.items() if sid not in renewed}
        now_held = self.fence.held()
        for sid in sorted(renewed):
            if now_held.get(sid) == held[sid]:  # not dropped meanwhile (unwatched)
                self.fence.hold(sid, held[sid], t0 + TRUST * self.lease_seconds)
                self._gain(sid, held[sid], resumed=True)
        if lost:
            rows = {lease.service_sid: lease for lease in await self.table.list(lost)}
            for sid, epoch in lost.items():
                row = rows.get(sid)
                self.fence.drop(sid)
                self._lose(sid, epoch, "expired" if row is None or row.epoch == epoch else "taken")

    async def _acquire(self, candidates: Sequence[str], take: int, left: set[str]) -> None:
        wanted = candidates[:take]
        if not wanted:
            return
        t0 = self._monotonic()
        got = await self.table.acquire_many(wanted, self.replica, self.lease_seconds)
        for sid in sorted(got):
            epoch = got[sid]
            self._free_since.pop(sid, None)
            if sid not in self._services:  # unwatched while we asked
                self._unwatched[sid] = epoch
                continue
            self.fence.hold(sid, epoch, t0 + TRUST * self.lease_seconds)
            if sid in left:
                self._kept.add(sid)
            self._gain(sid, epoch)
        if len(got) < len(wanted) < len(candidates):
            self._wake.set()  # others were quicker to some: try the rest at once

    async def _settled(self, services: list[str]) -> None:
        """Wait (a little) for the work in flight for ``services`` to end before releasing."""
        settle = self._settle
        if settle is None or not services:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(SETTLE_SECONDS, self.lease_seconds / 2)):
                await asyncio.gather(*(settle(sid) for sid in services))

    async def _release_unwatched(self) -> None:
        if self._unwatched:
            pending = dict(self._unwatched)
            await self._release(pending, "unwatched")
            for sid in pending:
                self._unwatched.pop(sid, None)

    async def _release(self, epochs: dict[str, int], reason: str) -> None:
        for sid in epochs:
            self.fence.drop(sid)  # no longer trusted from before the release is sent
        if reason != "stop" and self._settle is not None:
            # A hand-over: our cycle of each ends at its next request (the fence said no), and
            # only then is the lease released; the round goes on meanwhile.
            handing = asyncio.ensure_future(self._hand_over(dict(epochs), reason))
            self._handovers.add(handing)
            handing.add_done_callback(self._handovers.discard)
            return
        await self._release_now(epochs, reason)

    async def _hand_over(self, epochs: dict[str, int], reason: str) -> None:
        try:
            await self._settled(list(epochs))
            await self._release_now(epochs, reason)
        except (StateError, TimeoutError) as exc:  # not released: the leases expire
            log.warning("lease_release_failed", replica=self.replica, error=_error(exc))

    async def _release_now(self, epochs: dict[str, int], reason: str) -> None:
        for sid in epochs:
            self._lose(sid, epochs[sid], None)
        released = await self.table.release(self.replica, epochs)
        for sid in sorted(released):
            LEASE_CHANGES.labels(reason="released").inc()
            log.info(
                "lease_released",
                service_sid=sid,
                replica=self.replica,
                epoch=epochs[sid],
                reason=reason,
            )

    async def _release_all(self) -> None:
        held = self.fence.held()
        await self.table.leave(self.replica)  # first: the others count this replica out
        await self._release(held, "stop")

    def _note_free(self, free: Sequence[str]) -> set[str]:
        """Remember since when each Service is free; return those left free for a round."""
        now = self._monotonic()
        self._free_since = {sid: self._free_since.get(sid, now) for sid in free}
        # Half a round: a round woken by an announcement just after another does not count.
        wait = self._period / 2
        return {sid for sid, since in self._free_since.items() if now - since >= wait}

    def _lapse(self) -> None:
        """Lose what the fence stopped trusting without a renewal's answer (kept, to renew)."""
        held, trusted = self.fence.held(), self.fence.owned()
        for sid in sorted(self._owned):
            epoch = held.get(sid)
            if epoch is not None and sid not in trusted:
                self._lose(sid, epoch, "unavailable" if not self._reachable else "expired")

    def _gain(self, sid: str, epoch: int, *, resumed: bool = False) -> None:
        if sid in self._owned:
            return
        self._owned.add(sid)
        LEASE_CHANGES.labels(reason="acquired").inc()
        fields = {"resumed": True} if resumed else {}
        log.info("lease_acquired", service_sid=sid, replica=self.replica, epoch=epoch, **fields)
        self._tell(sid, True)

    def _lose(self, sid: str, epoch: int, reason: str | None) -> None:
        """Tell on_change a Service is no longer owned; ``reason``: log ``lease_lost``."""
        if sid not in self._owned:
            return
        self._owned.discard(sid)
        if reason is not None:
            LEASE_CHANGES.labels(reason="lost").inc()
            log.warning(
                "lease_lost", service_sid=sid, replica=self.replica, epoch=epoch, reason=reason
            )
        self._tell(sid, False)

    def _tell(self, sid: str, owned: bool) -> None:
        """Hand a gain or loss to ``on_change``; its failure is said, never the round's."""
        try:
            self._on_change(sid, owned)
        except Exception as exc:  # the daemon's callback: a bug there must not stop the leases
            log.error(
                "ownership_callback_failed",
                service_sid=sid,
                owned=owned,
                error=str(exc),
                error_type=type(exc).__name__,
            )

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, less when a lease is released elsewhere or ``_wake`` is set."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        listen = self._reachable
        while not self._wake.is_set() and (left := deadline - loop.time()) > 0:
            if not listen:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), left)
                break
            try:
                if await self._notified_within(left):
                    break
            except StateError as exc:
                self._reachable = False
                self._outage.report(_error(exc), replica=self.replica, location=self.table.location)
                listen = False
        self._wake.clear()

    async def _notified_within(self, seconds: float) -> bool:
        """Whether a release was announced (or ``_wake`` set) within ``seconds``."""
        notified = asyncio.ensure_future(self.table.wait(seconds))
        woken = asyncio.ensure_future(self._wake.wait())
        done, pending = await asyncio.wait({notified, woken}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if notified in done:
            return bool(notified.result()) or woken in done
        return True


def _error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the state database did not answer in time"
    return describe(exc)


def _ignore(service_sid: str, owned: bool) -> None:
    return None
