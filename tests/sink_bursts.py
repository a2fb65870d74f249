"""Helpers for the new sinks' tests: a hostile message body, bursts through the dispatcher."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from poller.config import DeliveryConfig
from poller.delivery.dispatcher import Dispatcher
from poller.delivery.policy import DeliveryPolicy
from poller.delivery.results import RunResult
from poller.events import Event
from poller.observe.metrics import REGISTRY
from poller.sinks import Sink
from poller.state.sqlite.store import SqliteStore
from tests.sink_contract_cases import make_event

# Everything a message body could try: pings, a Slack broadcast, HTML, a masked link.
HOSTILE = (
    "@everyone @here <!channel> <@123456789> <script>alert(1)</script> "
    "[click here](http://evil.example) **bold** _x_ `code`"
)
T0 = 1_800_000_000.0


def burst(count: int, *, sessions: int = 12, body: str = "a" * 600) -> list[Event]:
    """``count`` message events spread over ``sessions`` sessions, long bodies included."""
    return [make_event(session_sid=f"KC{i % sessions:032x}", body=body) for i in range(count)]


async def deliver(
    sink: Sink, events: Sequence[Event], folder: Path, *, max_attempts: int = 5
) -> tuple[RunResult, SqliteStore]:
    """Queue ``events`` for ``sink`` in a real SQLite outbox and run the dispatcher once."""
    store = SqliteStore.open(folder / "state.db")
    for event in events:
        await store.commit_poll(
            event.service_sid, event.session_sid, fetched={}, events=[(event, [sink.name])], now=T0
        )
    dispatcher = Dispatcher(
        store, [sink], DeliveryPolicy(DeliveryConfig(max_attempts=max_attempts))
    )
    return await dispatcher.run_once(ignore_timers=True), store


def answers(sink: str, outcome: str, answer: str) -> float:
    """The ``poller_sink_answers_total`` sample of one (sink, outcome, answer)."""
    labels = {"sink": sink, "outcome": outcome, "answer": answer}
    return REGISTRY.get_sample_value("poller_sink_answers_total", labels) or 0.0
