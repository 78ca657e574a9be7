"""Which sessions a node should claim or hand off: plain code over a snapshot of the cluster.

Every node runs the same rules on (nearly) the same view, so they agree without talking:

- A node's share is between floor and ceil of sessions / live nodes, capped by capacity.
- Each claimable session (no owner, or an owner whose lease is gone) has a preferred node by
  rendezvous hashing among the neediest live nodes: those below the floor if there are any,
  else those below the ceiling. The preferred node claims at once; any other node with room
  claims it only after `patience`, so a slow or full preferred node cannot strand it. The KV
  compare-and-set settles the rare races.
- A node above the ceiling while another is below it, or above the floor while another is
  below that, hands off a few sessions per round (at most `batch`), preferring sessions that
  hash to a needier node. A node that just handed off is not needier than the receiver, so
  it never wins its own sessions back. Nothing is handed off while sessions wait for an
  owner (new sessions balance the cluster by themselves), and never a `pinned` session
  (one in the middle of pairing: its QR code lives on this node's connection).
- A `leaving` node (a graceful stop under way) still owns its sessions until it releases
  them, but takes no share: the others make room for all of its sessions at once.
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
    pinned: frozenset[str] = frozenset(),
    leaving: frozenset[str] = frozenset(),
) -> Plan:
    alive = live_nodes | {me}
    live = alive - leaving
    counts = Counter(node for node in owners.values() if node in live)
    ceiling = fair_share(len(owners), len(live), capacity)
    floor = min(capacity, len(owners) // len(live))
    mine = counts[me]
    below_floor = sorted(node for node in live if counts[node] < floor)
    below_ceiling = sorted(node for node in live if counts[node] < ceiling)
    neediest = below_floor or below_ceiling

    claimable = sorted(sid for sid, node in owners.items() if node is None or node not in alive)
    if mine < ceiling:
        room = min(ceiling - mine, batch)
        claim: list[str] = []
        for sid in claimable:
            if len(claim) >= room:
                break
            waited = now - claimable_since.get(sid, now)
            if preferred(sid, neediest) == me or waited >= patience:
                claim.append(sid)
        return Plan(claim=tuple(claim))

    if claimable:
        return Plan()
    others_below_floor = [node for node in below_floor if node != me]
    others_below_ceiling = [node for node in below_ceiling if node != me]
    if mine > floor and others_below_floor:
        excess, receivers = mine - floor, others_below_floor
    elif mine > ceiling and others_below_ceiling:
        excess, receivers = mine - ceiling, others_below_ceiling
    else:
        return Plan()
    ours = sorted(sid for sid, node in owners.items() if node == me and sid not in pinned)
    # Sessions that hash to a receiving node first: they land there without a race.
    ours.sort(key=lambda sid: preferred(sid, [*receivers, me]) == me)
    return Plan(release=tuple(ours[: min(excess, batch)]))
