"""A poller alone on its state owns every Service and is always reachable."""

from __future__ import annotations

from poller.replicas.base import SoleOwner


async def test_the_sole_owner_owns_everything_and_never_changes() -> None:
    changes: list[tuple[str, bool]] = []
    owner = SoleOwner()
    await owner.start(["KS1", "KS2"], lambda sid, owned: changes.append((sid, owned)))
    assert owner.owns("KS1") and owner.owns("KS-never-named") and owner.reachable
    await owner.set_services([])
    await owner.stop()
    await owner.stop()
    assert owner.owns("KS1") and changes == []
