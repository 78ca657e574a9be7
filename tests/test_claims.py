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
from nats.js.kv import KeyValue
from pymongo.asynchronous.database import AsyncDatabase

from contracts.internal import NodeLease, Ownership
from contracts.types import utcnow
from services.common.bus import encode
from services.common.cluster import NODE, OWN
from services.common.config import Settings
from services.credentials.vault import Keyring
from services.devstack.probes import wait_until
from services.session_actor import ownership, placement
from services.session_actor.main import assemble
from services.session_actor.node import Node
from tests.conftest import TEST_VAULT_KEYS


@pytest.fixture
async def node(nc: NatsClient, settings: Settings, db: AsyncDatabase) -> AsyncIterator[Node]:
    """A node with a live view of the leases bucket; not started (no loops run)."""
    node = (await assemble(settings, nc, db, Keyring.parse(TEST_VAULT_KEYS))).node
    yield node
    node.actors.abort_all()
    await node.actors.wait_all()
    await node.cluster.stop()


@pytest.fixture
async def kv(nc: NatsClient, settings: Settings) -> KeyValue:
    return await nc.jetstream().key_value(settings.subjects.leases_bucket)


async def add_unowned(node: Node, kv: KeyValue, *sids: str) -> None:
    for sid in sids:
        await kv.create(OWN + sid, encode(Ownership()))
    await wait_until(
        lambda: all(s in node.cluster.view.sessions for s in sids), what="the node's view of the bucket"
    )


async def test_a_session_claimed_by_a_live_node_meanwhile_is_not_taken(
    node: Node, kv: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    await node.lease.register()
    # Another live node, as the leases bucket shows it.
    other = "other-node"
    lease = NodeLease(node_id=other, host="elsewhere", pid=1, capacity=1000, started_at=utcnow())
    await kv.put(NODE + other, encode(lease))
    # More claimable sessions than claims run at once: the last one waits for its turn.
    sids = [f"s{i:03d}" for i in range(ownership.CLAIM_CONCURRENCY + 1)]
    await add_unowned(node, kv, *sids)
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

    # The node's own handle on the bucket: the one its claims go through.
    assert node.cluster.kv is not None
    monkeypatch.setattr(node.cluster.kv, "update", update)
    await node.ownership.place()
    owners = {sid: (await kv.get(OWN + sid)).value for sid in sids}
    assert owners[contested] == encode(Ownership(node=other))  # not taken from its live owner
    assert all(owners[sid] == encode(Ownership(node=node.id)) for sid in sids[:-1])


async def test_a_claim_that_lands_as_the_node_stops_is_handed_back(
    node: Node, kv: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: with the whole cluster stopping, a node still claiming sessions another
    node had just released started actors after its shutdown had listed the ones to release.
    They outlived the release, kept the session owned by a node about to vanish, and their
    connections overlapped the next owner's at WhatsApp (the restart test counted 4)."""
    sid = "late"
    await add_unowned(node, kv, sid)
    # Only this session is placed, and only once: this node claims it.
    plans = iter([placement.Plan(claim=(sid,))])
    monkeypatch.setattr(placement, "plan", lambda **_: next(plans, placement.Plan()))
    assert node.cluster.kv is not None
    real_update = node.cluster.kv.update
    claimed = asyncio.Event()

    async def update(key: str, value: bytes, last: int | None = None, **kw: Any) -> int:
        revision = await real_update(key, value, last=last, **kw)
        if key == OWN + sid and not claimed.is_set():
            claimed.set()  # the claim has landed; its answer arrives only once the node is stopping
            await wait_until(lambda: not node.ownership.accepting, what="the shutdown")
            await asyncio.sleep(0.2)
        return revision

    monkeypatch.setattr(node.cluster.kv, "update", update)
    await node.start()
    await asyncio.wait_for(claimed.wait(), 10)
    await node.shutdown()
    assert len(node.actors) == 0
    owner = msgspec.json.decode((await kv.get(OWN + sid)).value, type=Ownership)
    assert owner.node is None and owner.released == "shutdown"


async def test_a_session_handed_off_is_not_restarted_before_the_watch_shows_the_release(
    node: Node, kv: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (`python -m bench stops` counted 8-15 overlapping connections): a rebalancing
    release had ended, but the node's view still showed the session as its own (the watch
    had not delivered the release yet). The next placement round saw "ours, but no actor",
    restarted one, and it connected next to the new owner."""
    await node.lease.register()
    sid = "moving"
    await add_unowned(node, kv, sid)
    assert await node.ownership.claim(sid, node.cluster.view.sessions[sid].revision)
    await wait_until(lambda: node.cluster.view.sessions[sid].owner.node == node.id, what="the claim seen")
    # From here the watch is slow: it delivers nothing more during the test.
    await node.cluster.stop()
    await node.ownership.release(sid, "rebalancing to another node")
    assert sid not in node.actors
    monkeypatch.setattr(placement, "plan", lambda **_: placement.Plan())
    await node.ownership.place()
    assert sid not in node.actors  # not restarted: the node knows it handed the session off
    owner = msgspec.json.decode((await kv.get(OWN + sid)).value, type=Ownership)
    assert owner.node is None


async def test_a_refused_session_is_handed_back_and_left_to_the_others(
    node: Node, kv: KeyValue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose keys cannot open a session's credentials hands it back and does not claim
    it again for REFUSAL_TTL, so a node that can open them takes it."""
    await node.lease.register()
    sid = "sealed-elsewhere"
    await add_unowned(node, kv, sid)
    revision = node.cluster.view.sessions[sid].revision
    assert await node.ownership.claim(sid, revision)
    claimed = node.cluster.view.sessions[sid].revision
    node.ownership.refuse(sid, claimed, "credentials_unusable: sealed with another key")

    async def handed_back() -> bool:
        owner = msgspec.json.decode((await kv.get(OWN + sid)).value, type=Ownership)
        return owner.node is None and owner.released == "credentials_unusable: sealed with another key"

    await wait_until(handed_back, what="the refused session handed back")
    await wait_until(lambda: sid not in node.actors, what="its actor gone")
    monkeypatch.setattr(placement, "plan", lambda **_: placement.Plan(claim=(sid,)))
    await node.ownership.place()
    assert await handed_back()  # not claimed again: the others get their chance
    assert sid not in node.actors
