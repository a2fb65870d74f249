"""Deliveries whose outcome the outbox refused to record because another replica owns them.

On a shared state (PostgreSQL) every ack, retry and dead letter checks that this replica still
holds the lease of the deliveries' Services (``FencedError`` otherwise: nothing written). Those
rows stay in the outbox exactly as they were, for the new owner to deliver under the same
ids; this replica forgets them (no hold in memory: they are not its to retry) and says so.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import structlog

from poller.delivery.holds import Holds
from poller.observe.metrics import DELIVERIES

if TYPE_CHECKING:
    from poller.state.models import Delivery

log = structlog.get_logger(__name__)


def drop_fenced(
    holds: Holds,
    sink: str,
    deliveries: Sequence[Delivery],
    lost_services: Collection[str],
    action: str,
) -> list[Delivery]:
    """Forget the deliveries of ``lost_services``; return the others (to write again).

    ``lost_services`` as a ``FencedError`` names them; naming none of ``deliveries`` (or no
    Service at all) fences every one.
    """
    lost = set(lost_services)
    fenced = [d for d in deliveries if d.event.service_sid in lost]
    if not fenced:
        fenced = list(deliveries)
    gone = {d.id for d in fenced}
    rest = [d for d in deliveries if d.id not in gone]
    holds.release(gone)
    DELIVERIES.labels(sink=sink, outcome="fenced").inc(len(fenced))
    log.warning(
        "delivery_fenced",
        sink=sink,
        action=action,
        deliveries=len(fenced),
        event_ids=[d.event.id for d in fenced[:10]],
        service_sids=sorted({d.event.service_sid for d in fenced}),
        reason="another replica owns these Services now: the rows stay for it",
    )
    return rest
