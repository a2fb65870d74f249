"""What the dispatcher reads and reports: the outbox it drains, a pass's tallies and results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from poller.record import Record

if TYPE_CHECKING:
    from poller.state.base import RowState
    from poller.state.history import Attempt
    from poller.state.models import Delivery, DisabledSink


class OutboxStore(Protocol):
    """The part of the state (``poller.state.base.StateStore``) the dispatcher uses."""

    async def due(self, sink: str, now: float | None, limit: int) -> list[Delivery]: ...

    async def backlog(self, sink: str, now: float | None, limit: int) -> list[Delivery]: ...

    async def ack(
        self, delivery_ids: Sequence[int], *, history: Sequence[Attempt] | None = None
    ) -> None: ...

    async def retry_later(
        self,
        delivery_id: int,
        *,
        next_attempt_at: float,
        error: str,
        status: int | None,
        attempt: Attempt | None = None,
    ) -> None: ...

    async def dead_letter(
        self,
        delivery_id: int,
        *,
        error: str,
        status: int | None,
        now: float,
        attempt: Attempt | None = None,
    ) -> None: ...

    async def record_attempts(self, attempts: Sequence[Attempt]) -> None: ...

    async def oldest_pending_enqueued_at(self) -> float | None: ...

    async def counts_by_sink(self, state: RowState) -> dict[str, int]: ...

    async def record_sink_disabled(
        self, sink: str, *, status: int | None, reason: str, now: float
    ) -> None: ...

    async def disabled_sinks(self, sink: str | None = None) -> Sequence[DisabledSink]: ...

    async def clear_sink_disabled(self, sink: str | None = None) -> Sequence[DisabledSink]: ...


@dataclass
class Tally:
    """What one pass has done so far for one sink."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    # Deliveries that failed in this pass -> when (``monotonic``) their retry is due.
    retry_at: dict[int, float] = field(default_factory=dict)
    # Deliveries left pending for the replica that owns their Service (not sent, not settled).
    not_owned: set[int] = field(default_factory=set)


@dataclass(frozen=True, repr=False, eq=False)
class SinkResult(Record):
    """What one ``run_once`` did for one sink."""

    delivered: int = 0
    failed: int = 0  # attempts that failed and were scheduled again
    dead: int = 0
    pending_left: int = 0
    disabled: bool = False
    not_owned: int = 0  # left pending for the replica that owns their Service


@dataclass(frozen=True, repr=False, eq=False)
class RunResult(Record):
    """What one ``run_once`` did, per sink and in total."""

    sinks: Mapping[str, SinkResult] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.sinks.values())

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.sinks.values())

    @property
    def dead(self) -> int:
        return sum(r.dead for r in self.sinks.values())

    @property
    def pending_left(self) -> int:
        return sum(r.pending_left for r in self.sinks.values())

    @property
    def not_owned(self) -> int:
        return sum(r.not_owned for r in self.sinks.values())

    @property
    def ok(self) -> bool:
        """True when nothing failed, died or is still waiting."""
        return self.failed == 0 and self.dead == 0 and self.pending_left == 0
