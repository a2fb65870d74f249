"""The fair share of leases: how many a replica may take, and what it should give up.

Pure arithmetic on what one round read from the database. With every replica healthy and
watching the same Services, each holds at most ceil(services / replicas): a replica takes free
Services up to that share, and one that holds more than its share while another live replica
holds less releases its part of what those lack (release first: they take it, never two
owners). A replica takes beyond its share only when no other live replica is below it (nobody
else would take those Services), or when a Service stayed free for a round (whoever should have
taken it did not: a replica that no longer watches it); those it keeps out of rebalancing, or
it would hand them back to a replica that does not want them, round after round.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """What one round does: release ``release``, or try ``candidates`` in order and take at
    most ``take`` of them."""

    candidates: tuple[str, ...]
    take: int
    release: tuple[str, ...]


def fair_share(services: int, replicas: int) -> int:
    """ceil(services / replicas), with at least one replica (this one)."""
    return math.ceil(services / max(1, replicas)) if services else 0


def plan(
    replica: str,
    held: Collection[str],
    live: Mapping[str, int],
    services: int,
    free: Collection[str],
    left: Collection[str] = (),
    kept: Collection[str] = (),
) -> Plan:
    """Decide one round for ``replica`` holding ``held``.

    ``live``: every live replica with the number of leases it holds (this one included or
    not); ``free``: the watched Services nobody holds; ``left``: those among them that stayed
    free for a round (nobody else takes them); ``kept``: those this replica took that way,
    never given away to rebalance (whoever is below its share did not want them).
    """
    others = {name: count for name, count in live.items() if name != replica}
    share = fair_share(services, len(others) + 1)
    deficit = sum(share - count for count in others.values() if count < share)
    givable = [sid for sid in held if sid not in kept]
    if deficit and len(held) > share and givable:
        # The replicas above their share split what those below it lack.
        above = 1 + sum(1 for count in others.values() if count > share)
        count = min(len(held) - share, len(givable), math.ceil(deficit / above))
        ranked = sorted(givable, key=lambda sid: _rank(replica, sid), reverse=True)
        return Plan((), 0, tuple(ranked[:count]))
    room = share - len(held) if deficit else len(free)
    overdue = sum(1 for sid in free if sid in left)
    candidates = sorted(free, key=lambda sid: (sid not in left, _rank(replica, sid)))
    return Plan(tuple(candidates), max(0, room, overdue), ())


def _rank(replica: str, service_sid: str) -> bytes:
    """An order of Services of this replica's own: replicas racing for free Services try
    them in different orders (fewer collisions), and each gives up the same ones first."""
    return hashlib.blake2b(f"{replica}\0{service_sid}".encode(), digest_size=8).digest()
