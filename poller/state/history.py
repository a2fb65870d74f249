"""The history side of the state: kept events, delivery attempts, replay.

An event stays in the state while any of its deliveries is pending or dead (the outbox), and,
when its deliveries were acked with their attempts (``Outbox.ack(..., history=...)``), for
``delivery.history_seconds`` after the last of them was acked (``prune_history``). Every
attempt the dispatcher reports (success, retry, dead letter, a disabling answer) is kept with
its event and goes with it.

A kept event is in its original order: ``seq`` grows with every event stored, so replaying a
selection of events queues them again in the order they were first enqueued. What the history
hands out (kept events, their outcomes, kept attempts) is in ``poller.state.views``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from poller.record import Record

if TYPE_CHECKING:
    from poller.state.views import AttemptRecord, HistoryQuery, KeptEvent

AttemptOutcome = Literal["delivered", "retry", "dead", "disabled"]


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Attempt(Record):
    """One attempt at a delivery, as the dispatcher reports it to the state.

    ``at``: when it began (wall clock); ``latency_seconds``: how long the sink took to answer
    (or to fail); ``status``: the HTTP status (or SMTP code) when the answer had one;
    ``error``: a short error class (``HTTP 503``, ``ReadTimeout``), None on success. Never a
    message body, a URL or a secret.
    """

    delivery_id: int
    at: float
    latency_seconds: float
    outcome: AttemptOutcome
    status: int | None = None
    error: str | None = None


class History(ABC):
    """Kept events and attempts: ``poller events list/replay`` and the status page read them."""

    @abstractmethod
    async def record_attempts(self, attempts: Sequence[Attempt]) -> None:
        """Keep attempts whose outcome changes no outbox row (a disabling answer); ONE transaction.

        An attempt whose delivery row is gone is ignored.
        """

    @abstractmethod
    async def history(self, query: HistoryQuery) -> list[KeptEvent]:
        """Return the kept events ``query`` selects, in their original order."""

    @abstractmethod
    async def replay(self, sink: str, event_ids: Sequence[str], *, now: float) -> list[str]:
        """Queue kept events again for ``sink``, under their own ids; return the ids queued.

        ONE transaction. Each event gets a new pending row for ``sink`` (due at ``now``, no
        attempts), the rows enqueued in the events' original order, whatever the order of
        ``event_ids``: each (sink, session) queue delivers them in that order, behind what it
        already holds. An event the outbox already holds for ``sink`` (pending or dead) and an
        id the state does not keep are skipped (not in the result). A replayed event is no
        longer done (``done_at`` None) until its new row is acked.
        """

    @abstractmethod
    async def prune_history(self, now: float, keep_seconds: float) -> int:
        """Forget events done over ``keep_seconds`` ago, with their attempts; ONE transaction.

        An event with a pending or dead row is never pruned. Returns how many events went.
        """

    @abstractmethod
    async def recent_attempts(self, sink: str, limit: int) -> list[AttemptRecord]:
        """Return the latest ``limit`` kept attempts for ``sink``, the newest first."""

    @abstractmethod
    async def oldest_pending_by_sink(self) -> dict[str, float]:
        """Return ``{sink: enqueue time of its oldest pending row}``, for sinks with one."""

    @abstractmethod
    async def kept_events(self) -> int:
        """Return how many events the state keeps (pending, dead and done alike)."""
