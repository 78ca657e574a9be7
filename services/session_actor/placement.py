"""Which sessions a node should claim or hand off: plain code over a snapshot of the cluster.

Every node runs the same rules on (nearly) the same view, so they agree without talking:

- The fair share is ceil(sessions / live nodes), capped by the node's capacity.
- Each claimable session (no owner, or an owner whose lease is gone) has a preferred node by
  rendezvous hashing among live nodes that are below their share. The preferred node claims
  at once; any other node with room claims it only after `patience`, so a slow or full
  preferred node cannot strand it. The KV compare-and-set settles the rare races.
- A node above its share hands off a few sessions per round (at most `batch`), only while
  some other node is below its share, preferring sessions that hash to such a node.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    claim: tuple[str, ...] = ()
    release: tuple[str, ...] = ()


def fair_share(sessions: int, nodes: int, capacity: int) -> int:
    return min(capacity, math.ceil(sessions / nodes)) if nodes else 0


def _score(sid: str, node: str) -> bytes:
    return hashlib.blake2b(f"{sid}\x00{node}".encode(), digest_size=8).digest()


def preferred(sid: str, candidates: list[str]) -> str | None:
    return max(candidates, key=lambda node: _score(sid, node)) if candidates else None


def plan(
    *,
    me: str,
    live_nodes: frozenset[str],
    owners: Mapping[str, str | None],
    capacity: int,
    batch: int,
    claimable_since: Mapping[str, float],
    now: float,
    patience: float,
) -> Plan:
    live = live_nodes | {me}
    counts = Counter(node for node in owners.values() if node in live)
    target = fair_share(len(owners), len(live), capacity)
    mine = counts[me]
    below = sorted(node for node in live if counts[node] < target)

    if mine < target:
        room = min(target - mine, batch)
        claim: list[str] = []
        for sid in sorted(sid for sid, node in owners.items() if node is None or node not in live):
            if len(claim) >= room:
                break
            waited = now - claimable_since.get(sid, now)
            if preferred(sid, below) == me or waited >= patience:
                claim.append(sid)
        return Plan(claim=tuple(claim))

    if mine > target and any(node != me for node in below):
        others = [node for node in below if node != me]
        ours = sorted(sid for sid, node in owners.items() if node == me)
        # Sessions that hash to an under-loaded node first: they land there without a race.
        ours.sort(key=lambda sid: preferred(sid, [*others, me]) == me)
        return Plan(release=tuple(ours[: min(mine - target, batch)]))

    return Plan()
