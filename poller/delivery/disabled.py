"""Disabled sinks: the dispatcher stops using a sink whose answer says nothing will get through.

A webhook that is gone (410; Discord's and Teams' 404), refused SMTP credentials (535), a
revoked Slack token: the sink is off for the rest of the process and its events stay pending.
The answer is also noted in the state file (``disabled_sinks``), so that ``poller outbox list``
and ``poller state show`` say which sink, since when and why, long after the log line.

The note is forgotten once the sink takes an answer that does not disable it (after a restart,
a reload or the next ``poller once``), and when ``poller outbox retry`` clears it: a running
daemon then uses the sink again at its next delivery pass, with the config it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import structlog

from poller.errors import SinkDisabledError
from poller.observe.metrics import DELIVERIES, SINK_DISABLED

if TYPE_CHECKING:
    from poller.state.models import DisabledSink

log = structlog.get_logger(__name__)


class DisabledStore(Protocol):
    """The part of the store that keeps the notes."""

    async def record_sink_disabled(
        self, sink: str, *, status: int | None, reason: str, now: float
    ) -> None: ...

    async def disabled_sinks(self, sink: str | None = None) -> Sequence[DisabledSink]: ...

    async def clear_sink_disabled(self, sink: str | None = None) -> Sequence[DisabledSink]: ...


class DisabledSinks:
    """Which sinks are off in this process, kept in step with the notes in the store."""

    def __init__(self, store: DisabledStore) -> None:
        self._store = store
        self._off: set[str] = set()
        # Sinks with a note in the store; None until the first pass has read them.
        self._noted: set[str] | None = None

    def __contains__(self, sink: object) -> bool:
        return sink in self._off

    def __bool__(self) -> bool:
        return bool(self._off)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._off)

    async def sync(self, sinks: Iterable[str]) -> None:
        """At the start of a pass: resume the sinks whose note was cleared meanwhile.

        Reads the store only on the first pass and while a sink is off.
        """
        if self._noted is not None and not self._off:
            return
        noted = {d.sink for d in await self._store.disabled_sinks()}
        if self._noted is None:
            for sink in sinks:
                SINK_DISABLED.labels(sink=sink).set(0)
        for sink in sorted(self._off - noted):
            self._off.discard(sink)
            SINK_DISABLED.labels(sink=sink).set(0)
            log.info("sink_resumed", sink=sink, reason="its disabled note was cleared")
        self._noted = noted

    async def disable(self, sink: str, exc: SinkDisabledError, count: int, now: float) -> None:
        """Turn ``sink`` off after ``exc`` answered ``count`` deliveries; note why."""
        DELIVERIES.labels(sink=sink, outcome="disabled").inc(count)
        if sink in self._off:
            return
        self._off.add(sink)
        SINK_DISABLED.labels(sink=sink).set(1)
        log.error("sink_disabled", sink=sink, status=exc.status, error=str(exc))
        # Off in memory even if the note cannot be written (a full disk): the next pass finds
        # no note, so it tries the sink again, and notes it then.
        await self._store.record_sink_disabled(sink, status=exc.status, reason=str(exc), now=now)
        if self._noted is not None:
            self._noted.add(sink)

    async def answered(self, sink: str) -> None:
        """``sink`` took an answer that does not disable it: forget an older note."""
        if sink in self._off or self._noted is None or sink not in self._noted:
            return
        await self._store.clear_sink_disabled(sink)
        self._noted.discard(sink)
        log.info("sink_enabled", sink=sink, reason="it answered without disabling itself")
