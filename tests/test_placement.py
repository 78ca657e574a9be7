"""Placement rules: fair share, rendezvous preference, patience, bounded rebalancing."""

from __future__ import annotations

from collections import Counter

from services.session_actor.placement import fair_share, plan, preferred


def run_plan(
    me, live, owners, capacity=1000, batch=1000, since=None, now=0.0, patience=1.0, pinned=frozenset(), leaving=frozenset()
):
    return plan(
        pinned=pinned,
        leaving=frozenset(leaving),
        me=me,
        live_nodes=frozenset(live),
        owners=owners,
        capacity=capacity,
        batch=batch,
        claimable_since=since or {},
        now=now,
        patience=patience,
    )


def test_fair_share_is_capped_by_capacity() -> None:
    assert fair_share(1000, 3, 5000) == 334
    assert fair_share(1000, 3, 100) == 100
    assert fair_share(0, 3, 10) == 0


def test_cold_start_splits_sessions_without_overlap_between_nodes() -> None:
    nodes = ["a", "b", "c"]
    owners = {f"s{i}": None for i in range(300)}
    claims = {n: set(run_plan(n, nodes, owners).claim) for n in nodes}
    assert not (claims["a"] & claims["b"] or claims["a"] & claims["c"] or claims["b"] & claims["c"])
    # Rendezvous hashing is uneven: a node whose share is full leaves the rest of its
    # preferred sessions for the patience round.
    assert sum(map(len, claims.values())) >= 270
    assert all(len(claims[n]) <= 100 for n in nodes)


def test_non_preferred_sessions_are_claimed_only_after_patience() -> None:
    owners = {f"s{i}": None for i in range(50)}
    mine = {sid for sid in owners if preferred(sid, ["a", "b"]) == "a"}
    first = set(run_plan("a", ["a", "b"], owners, since={s: 0.0 for s in owners}, now=0.5).claim)
    assert first == mine
    later = set(run_plan("a", ["a", "b"], owners, since={s: 0.0 for s in owners}, now=2.0).claim)
    assert later == set(owners) - (set(owners) - set(later)) and len(later) == 25  # fair share


def test_sessions_of_a_dead_node_are_claimable() -> None:
    owners = {"s1": "dead", "s2": "a"}
    assert run_plan("b", ["a", "b"], owners, now=5, since={"s1": 0}).claim == ("s1",)


def test_a_leaving_node_keeps_its_sessions_but_the_others_make_room_for_all_of_them() -> None:
    # 3 nodes with 30 each; "c" starts a graceful stop and has released 10 so far.
    owners = {f"a{i}": "a" for i in range(30)} | {f"b{i}": "b" for i in range(30)}
    owners |= {f"c{i}": "c" for i in range(20)} | {f"r{i}": None for i in range(10)}
    nodes = ["a", "b", "c"]
    claims = {n: set(run_plan(n, nodes, owners, leaving={"c"}, since={}, now=0.0).claim) for n in "ab"}
    # Every released session is claimed at once by exactly one node (its preferred one);
    # without `leaving` both would already be at their share (30 of 90 / 3) and wait.
    assert claims["a"] | claims["b"] == {f"r{i}" for i in range(10)} and not claims["a"] & claims["b"]
    assert not any(run_plan(n, nodes, owners, since={}).claim for n in "ab")
    # Sessions the leaving node still holds are not claimable, even after any patience.
    assert not any(sid.startswith("c") for n in "ab" for sid in run_plan(n, nodes, owners, leaving={"c"}, now=99).claim)


def test_overloaded_node_sheds_a_bounded_batch_toward_the_new_node() -> None:
    owners = {f"s{i}": "a" for i in range(90)}
    decision = run_plan("a", ["a", "b", "c"], owners, batch=10)
    assert len(decision.release) == 10 and not decision.claim
    # Those that hash to an under-loaded node go first.
    assert all(preferred(sid, ["b", "c", "a"]) != "a" for sid in decision.release)


def test_balanced_cluster_is_left_alone() -> None:
    owners = {f"s{i}": "abc"[i % 3] for i in range(99)}
    for node in "abc":
        assert run_plan(node, "abc", owners) == run_plan(node, "abc", owners).__class__()


def test_rebalancing_converges_to_a_fair_share() -> None:
    owners = {f"s{i}": "a" for i in range(100)}
    live = ["a", "b", "c"]
    since: dict[str, float] = {}
    for round_no in range(40):
        now = float(round_no)
        for node in live:
            decision = run_plan(node, live, owners, batch=10, since=since, now=now)
            for sid in decision.release:
                owners[sid] = None
                since.setdefault(sid, now)
            for sid in decision.claim:
                owners[sid] = node
                since.pop(sid, None)
    counts = Counter(owners.values())
    assert None not in counts
    assert max(counts.values()) - min(counts.values()) <= 1


def test_sessions_in_the_middle_of_pairing_are_never_handed_off() -> None:
    owners = {f"s{i}": "a" for i in range(30)}
    pinned = frozenset(f"s{i}" for i in range(25))
    decision = run_plan("a", ["a", "b"], owners, batch=30, pinned=pinned)
    assert set(decision.release) <= {f"s{i}" for i in range(25, 30)}
    assert decision.release


def test_nothing_is_handed_off_while_sessions_wait_for_an_owner() -> None:
    owners = {**{f"s{i}": "a" for i in range(30)}, "new": None}
    assert run_plan("a", ["a", "b"], owners).release == ()
