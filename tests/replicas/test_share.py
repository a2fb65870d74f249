"""The fair share: what a round takes and what it gives up (pure)."""

from __future__ import annotations

from poller.replicas.share import fair_share, plan


def test_the_share_is_the_ceiling_of_services_over_replicas() -> None:
    assert [fair_share(6, n) for n in (1, 2, 3, 4, 6, 7)] == [6, 3, 2, 2, 1, 1]
    assert fair_share(0, 3) == 0
    assert fair_share(5, 0) == 5  # this replica, even before its heartbeat is seen


def test_a_replica_takes_up_to_its_share_while_another_is_below_it() -> None:
    decided = plan("a", {"S1"}, {"a": 1, "b": 0}, 6, ["S2", "S3", "S4", "S5"])
    assert decided.take == 2 and decided.release == ()
    assert sorted(decided.candidates) == ["S2", "S3", "S4", "S5"]


def test_a_replica_alone_or_with_others_at_their_share_takes_every_free_one() -> None:
    assert plan("a", set(), {}, 6, ["S1", "S2", "S3"]).take == 3
    # b holds its share: nobody else would take the free ones.
    assert plan("a", {"S1", "S2", "S3"}, {"a": 3, "b": 3}, 6, ["S9"]).take == 1


def test_those_above_their_share_split_what_a_joiner_lacks() -> None:
    held = {"S1", "S2", "S3"}
    live = {"a": 3, "b": 3, "c": 0}
    decided = plan("a", held, live, 6, [])
    assert len(decided.release) == 1 and set(decided.release) <= held and decided.take == 0
    assert plan("a", held, live, 6, []) == decided  # always the same one
    alone = plan("a", {f"S{i}" for i in range(6)}, {"a": 6, "b": 0}, 6, [])
    assert len(alone.release) == 3


def test_nothing_is_released_when_nobody_is_below_the_share() -> None:
    # 7 Services on 3 replicas: 3/3/1 is within the share (3); nobody gives anything up.
    assert plan("a", {"S1", "S2", "S3"}, {"a": 3, "b": 3, "c": 1}, 7, []).release == ()
    assert plan("c", {"S7"}, {"a": 3, "b": 3, "c": 1}, 7, []).take == 0
    assert plan("b", {"S4", "S5"}, {"a": 3, "b": 2, "c": 1}, 7, []).release == ()


def test_a_service_left_free_for_a_round_is_taken_beyond_the_share_first() -> None:
    decided = plan("a", {"S1", "S2"}, {"a": 2, "b": 0}, 3, ["S3"], left={"S3"})
    assert decided.take == 1 and decided.candidates == ("S3",)
    mixed = plan("a", set(), {"b": 0}, 4, ["S1", "S2", "S3"], left={"S3"})
    assert mixed.candidates[0] == "S3" and mixed.take == 2


def test_what_was_left_free_is_never_given_away_to_rebalance() -> None:
    # b is below its share but did not take S2 when it was free: a hands over S1 instead.
    decided = plan("a", {"S1", "S2"}, {"a": 2, "b": 0}, 2, [], kept={"S2"})
    assert decided.release == ("S1",)
    assert plan("a", {"S2", "S3"}, {"a": 2, "b": 0}, 2, [], kept={"S2", "S3"}).release == ()
