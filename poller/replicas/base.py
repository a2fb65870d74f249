"""``Ownership``: which watched Services this replica may poll and deliver now."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

# Called with (service_sid, owned) when this replica gains (True) or loses (False) a Service.
OnChange = Callable[[str, bool], None]
# Awaited before a Service this replica gives up (a hand-over) is released to the others:
# returns once the work in flight for it (a cycle still calling Twilio) has ended.
Settle = Callable[[str], Awaitable[None]]


class Ownership(ABC):
    """What the daemon asks before it polls a Service or delivers one of its events."""

    replica: str

    @abstractmethod
    def owns(self, service_sid: str) -> bool:
        """Whether this replica may poll and deliver ``service_sid`` now (cheap, local)."""

    @abstractmethod
    async def start(
        self, services: Sequence[str], on_change: OnChange, settle: Settle | None = None
    ) -> None:
        """Begin owning what this replica can of ``services``.

        One round is done before this returns (a first start polls at once); the rest runs
        in a task of its own until :meth:`stop`. ``on_change`` hears every gain and loss;
        ``settle`` is awaited between telling a loss this replica chose (a hand-over) and
        releasing the lease, so that the next owner never polls beside a cycle of ours.
        """

    @abstractmethod
    async def set_services(self, services: Sequence[str]) -> None:
        """The watched Services changed (a reload): give up those no longer watched."""

    @abstractmethod
    async def stop(self) -> None:
        """Give up every Service at once (a clean stop) and end the task; twice is harmless."""

    @property
    @abstractmethod
    def reachable(self) -> bool:
        """Whether the shared state answered lately (readiness); owning nothing is fine."""


class SoleOwner(Ownership):
    """A poller alone on its state: it owns every watched Service, always."""

    def __init__(self, replica: str = "sole") -> None:
        self.replica = replica

    def owns(self, service_sid: str) -> bool:
        return True

    async def start(
        self, services: Sequence[str], on_change: OnChange, settle: Settle | None = None
    ) -> None:
        return None

    async def set_services(self, services: Sequence[str]) -> None:
        return None

    async def stop(self) -> None:
        return None

    @property
    def reachable(self) -> bool:
        return True
