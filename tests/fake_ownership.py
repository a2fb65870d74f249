"""A test double of ``poller.replicas.base.Ownership``: owns what the test says, records calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

from poller.replicas.base import OnChange, Ownership


class FakeOwnership(Ownership):
    """Owns ``owned`` (the test changes it with :meth:`gain` and :meth:`lose`).

    ``calls`` records ``("start", services)``, ``("set_services", services)`` and
    ``("stop",)`` in order; ``on_stop`` runs inside :meth:`stop` (to look at the world then).
    """

    def __init__(
        self,
        owned: Iterable[str] = (),
        *,
        replica: str = "replica-a",
        reachable: bool = True,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.replica = replica
        self.owned = set(owned)
        self.is_reachable = reachable
        self.calls: list[tuple[object, ...]] = []
        self._on_change: OnChange | None = None
        self._on_stop = on_stop
        self.services_set = asyncio.Event()  # set by every set_services

    def owns(self, service_sid: str) -> bool:
        return service_sid in self.owned

    async def start(self, services: Sequence[str], on_change: OnChange) -> None:
        self.calls.append(("start", list(services)))
        self._on_change = on_change

    async def set_services(self, services: Sequence[str]) -> None:
        self.calls.append(("set_services", list(services)))
        self.services_set.set()

    async def stop(self) -> None:
        self.calls.append(("stop",))
        if self._on_stop is not None:
            await self._on_stop()

    @property
    def reachable(self) -> bool:
        return self.is_reachable

    def gain(self, service_sid: str) -> None:
        """This replica took ``service_sid``'s lease: tell whoever started it."""
        self.owned.add(service_sid)
        if self._on_change is not None:
            self._on_change(service_sid, True)

    def lose(self, service_sid: str) -> None:
        self.owned.discard(service_sid)
        if self._on_change is not None:
            self._on_change(service_sid, False)
