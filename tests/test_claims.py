"""A node's claims are compare-and-sets against the entries its placement decision saw, and
a claim that lands while its node stops is handed back.

Regression: claims wait their turn (at most CLAIM_CONCURRENCY at once) while the node's view
of the leases bucket moves on. A claim that re-read the entry when its turn came took a
session another live node had claimed meanwhile: two owners, an overlapping connection at
WhatsApp (the chaos run counted 8) until the fence stopped the older one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.internal import NodeLease, Ownership
from contracts.types import utcnow
from services.common.bus import encode
from services.common.cluster import NODE, OWN
from services.common.config import Settings
from services.credentials.vault import Keyring
from services.devstack.probes import wait_until
from services.session_actor import node as node_module
from services.session_actor import placement
from services.session_actor.adapters.sim import SimClientFactory
from services.session_actor.node import Node
from tests.conftest import TEST_VAULT_KEYS


@pytest.fixture
async def node(nc: NatsClient, settings: Settings, db: AsyncDatabase) -> AsyncIterator[Node]:
    """A registered node with a live view of the leases bucket; its loops are not running."""
    node = Node(settings, nc, db, SimClientFactory(nc, settings), Keyring.parse(TEST_VAULT_KEYS))
    await node.cluster.start()
    assert node.cluster.kv is not None
    node.kv = node.cluster.kv
    await node._register()
    yield node
    node._abort_all()
    await asyncio.gather(*(a.finished.wait() for a in list(node.actors.values())))
    await node.cluster.stop()


async def add_unowned(node: Node, *sids: str) -> None:
    for sid in sids:
        await node.kv.create(OWN + sid, encode(Ownership()))
    await wait_until(
        lambda: all(s in node.cluster.view.sessions for s in sids), what="the node's view of the bucket"
    )


async def test_a_session_claimed_by_a_live_node_meanwhile_is_not_taken(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    kv = node.kv
    # Another live node, as the leases bucket shows it.
    other = "other-node"
    lease = NodeLease(node_id=other, host="elsewhere", pid=1, capacity=1000, started_at=utcnow())
    await kv.put(NODE + other, encode(lease))
    # More claimable sessions than claims run at once: the last one waits for its turn.
    sids = [f"s{i:03d}" for i in range(node_module.CLAIM_CONCURRENCY + 1)]
    await add_unowned(node, *sids)
    contested = sids[-1]
    await wait_until(lambda: other in node.cluster.view.nodes, what="the other node seen")
    monkeypatch.setattr(placement, "plan", lambda **_: placement.Plan(claim=tuple(sids)))
    # While the first claims are under way, the other node claims the last session.
    real_update = kv.update
    race_seen = asyncio.Event()
    racing = False

    async def update(key: str, value: bytes, last: int | None = None, **kw: Any) -> int:
        nonlocal racing
        if not race_seen.is_set() and key != OWN + contested:
            if not racing:
                racing = True
                seen = node.cluster.view.sessions[contested].revision
                await real_update(OWN + contested, encode(Ownership(node=other)), last=seen)
                await wait_until(
                    lambda: node.cluster.view.sessions[contested].owner.node == other, what="the race seen"
                )
                race_seen.set()
            await race_seen.wait()  # no claim finishes (so the waiting one starts) before that
        return await real_update(key, value, last=last, **kw)

    monkeypatch.setattr(kv, "update", update)
    await node._place()
    owners = {sid: (await kv.get(OWN + sid)).value for sid in sids}
    assert owners[contested] == encode(Ownership(node=other))  # not taken from its live owner
    assert all(owners[sid] == encode(Ownership(node=node.id)) for sid in sids[:-1])


async def test_a_claim_that_lands_as_the_node_stops_is_handed_back(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: with the whole cluster stopping, a node still claiming sessions another
    node had just released started actors after its shutdown had listed the ones to release.
    They outlived the release, kept the session owned by a node about to vanish, and their
    connections overlapped the next owner's at WhatsApp (the restart test counted 4)."""
    kv = node.kv
    sid = "late"
    await add_unowned(node, sid)
    monkeypatch.setattr(placement, "plan", lambda **_: placement.Plan(claim=(sid,)))
    real_update = kv.update
    claimed = asyncio.Event()

    async def update(key: str, value: bytes, last: int | None = None, **kw: Any) -> int:
        revision = await real_update(key, value, last=last, **kw)
        if key == OWN + sid and not claimed.is_set():
            claimed.set()  # the claim has landed; its answer arrives only once the node is stopping
            await wait_until(lambda: not node._accepting, what="the shutdown")
            await asyncio.sleep(0.2)
        return revision

    monkeypatch.setattr(kv, "update", update)
    node._tasks = [asyncio.create_task(node._placement_loop())]
    node._wake.set()
    await asyncio.wait_for(claimed.wait(), 10)
    await node.shutdown()
    assert node.actors == {}
    owner = msgspec.json.decode((await kv.get(OWN + sid)).value, type=Ownership)
    assert owner.node is None and owner.released == "shutdown"


async def test_a_session_handed_off_is_not_restarted_before_the_watch_shows_the_release(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (`python -m bench stops` counted 8-15 overlapping connections): a rebalancing
    release had ended, but the node's view still showed the session as its own (the watch
    had not delivered the release yet). The next placement round saw "ours, but no actor",
    restarted one, and it connected next to the new owner."""
    kv = node.kv
    sid = "moving"
    await add_unowned(node, sid)
    assert await node._claim(sid, node.cluster.view.sessions[sid].revision)
    await wait_until(lambda: node.cluster.view.sessions[sid].owner.node == node.id, what="the claim seen")
    # From here the watch is slow: it delivers nothing more during the test.
    monkeypatch.setattr(node.cluster, "_apply", lambda *_: None)
    await node._release(sid, "rebalancing to another node")
    assert sid not in node.actors
    monkeypatch.setattr(placement, "plan", lambda **_: placement.Plan())
    await node._place()
    assert sid not in node.actors  # not restarted: the node knows it handed the session off
    owner = msgspec.json.decode((await kv.get(OWN + sid)).value, type=Ownership)
    assert owner.node is None
