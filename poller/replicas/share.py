"""The fair share of leases: how many a replica may take, and whether it should give one up.

Pure arithmetic on what one round read from the database. With every replica healthy and
watching the same Services, each holds at most ceil(services / replicas): a replica takes free
Services up to that share, and one that holds more than its share while another live replica
holds less releases one per round (release first: the other takes it, never two owners). A
replica takes beyond its share only when no other live replica is below it (nobody else would
take those Services), or when a Service stayed free for a whole lease (whoever should have
taken it did not).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """What one round does: the Services to try to take (in order, at most ``take`` of them)
    and the one to release (or None)."""

    candidates: tuple[str, ...]
    take: int
    release: str | None


def fair_share(services: int, replicas: int) -> int:
    """ceil(services / replicas), with at least one replica (this one)."""
    return math.ceil(services / max(1, replicas)) if services else 0


def plan(
    replica: str,
    held: Collection[str],
    live: Mapping[str, int],
    services: int,
    free: Collection[str],
    long_free: Collection[str] = (),
) -> Plan:
    """Decide one round for ``replica`` holding ``held``.

    ``live``: every live replica with the number of leases it holds (this one included or
    not); ``free``: the watched Services nobody holds; ``long_free``: those among them free
    for a whole lease already.
    """
    others = {name: count for name, count in live.items() if name != replica}
    share = fair_share(services, len(others) + 1)
    starved = any(count < share for count in others.values())
    release = None
    if starved and len(held) > share:
        release = max(held, key=lambda sid: _rank(replica, sid))
    room = share - len(held) if starved else len(free)
    overdue = [sid for sid in free if sid in long_free]
    candidates = sorted(free, key=lambda sid: (sid not in long_free, _rank(replica, sid)))
    take = max(0, room, len(overdue)) if release is None else 0
    return Plan(tuple(candidates), take, release)


def _rank(replica: str, service_sid: str) -> bytes:
    """An order of Services of this replica's own: replicas racing for free Services try
    them in different orders (fewer collisions), and each always gives up the same one."""
    return hashlib.blake2b(f"{replica}\0{service_sid}".encode(), digest_size=8).digest()
