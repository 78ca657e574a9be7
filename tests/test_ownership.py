"""Single ownership, failover, handoff, rebalancing and restore across session-actor nodes.

Three real node processes, the simulator, real NATS and the MongoDB-compatible server. The
simulator counts every time two connections used one device at once: it must stay zero.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.scenarios import pair
from services.devstack.servers import free_port

pytestmark = pytest.mark.slow

SESSIONS = 12


async def sessions(nc, settings) -> list[dict]:
    return (await call_ok(nc, settings.subjects.session_list, {}, timeout=2))["sessions"]


async def overlaps(nc, settings) -> int:
    stats = await call_ok(nc, settings.subjects.sim_stats, {"refs": False})
    return stats["totals"]["overlaps"]


def proc_of(node_id: str) -> str:
    """Node ids are `<node name>-<random>`; the tests name nodes node1, node2, ..."""
    return node_id.rsplit("-", 1)[0]


async def all_connected(
    nc, settings, count: int = SESSIONS, avoid: str | None = None, besides: str | None = None
) -> list[dict]:
    """Every session but `besides` connected, on nodes other than `avoid`."""
    seen: list[list[dict]] = []

    async def check() -> list[dict] | None:
        listed = [s for s in await sessions(nc, settings) if s["session_id"] != besides]
        seen[:] = [listed]
        ok = len(listed) == count and all(
            s["state"] == "connected" and (avoid is None or proc_of(s["node"]) != avoid) for s in listed
        )
        return listed if ok else None

    try:
        return await wait_until(check, timeout=30, interval=0.1, what="every session connected")
    except AssertionError as exc:
        states = [(s["session_id"], s["state"], s.get("node"), s.get("reason")) for s in (seen[0] if seen else [])]
        raise AssertionError(f"{exc}; last listing: {states}") from None


@pytest.fixture
async def cluster(stack, nc, settings):
    stack.start("wa-sim")
    stack.start("health-monitor", health_port=free_port())
    for i in range(3):
        stack.start("session-actor", f"node{i + 1}")
    tap = await EventTap(nc, settings).start()
    await wait_until(lambda: call(nc, settings.subjects.session_list, {}, timeout=2), timeout=60, what="nodes")
    await asyncio.gather(*(pair(nc, settings, tap, f"s{i:02d}") for i in range(SESSIONS)))
    await all_connected(nc, settings)
    yield tap
    await tap.stop()


async def test_kill_9_moves_every_session_of_the_dead_node(cluster, stack, nc, settings) -> None:
    listed = await sessions(nc, settings)
    victim = Counter(proc_of(s["node"]) for s in listed).most_common(1)[0][0]
    moved = [s["session_id"] for s in listed if proc_of(s["node"]) == victim]
    before = {sid: len(cluster.of(sid, "status")) for sid in moved}
    killed_at = time.monotonic()
    stack.kill(victim)

    # Status truth: a dead owner's sessions are not reported connected.
    async def reported_lost() -> bool:
        for sid in moved:
            now = await call_ok(nc, settings.subjects.session(sid, "get"))
            if now["state"] == "connected" and proc_of(now["node"]) == victim:
                return False
        return True

    await wait_until(reported_lost, timeout=settings.lease_ttl + 2, what="dead owner's sessions not shown connected")
    await all_connected(nc, settings, avoid=victim)
    failover = time.monotonic() - killed_at
    assert failover < 2 * settings.lease_ttl + 2, failover
    for sid in moved:
        after = cluster.states(sid)[before[sid] :]
        assert after[0] != "connected" and after[-1] == "connected", after
    assert await overlaps(nc, settings) == 0


async def test_sigterm_hands_sessions_off_at_once(cluster, stack, nc, settings) -> None:
    # One more session, showing its QR code to nobody yet: its pairing must move too.
    s = settings.subjects
    await call_ok(nc, s.session_create, {"session_id": "unscanned"})
    await call_ok(nc, s.session("unscanned", "pair"), {"method": "qr"}, timeout=30)
    first_qr = await cluster.wait_for("unscanned", "status", lambda e: bool(e.get("qr")), timeout=30)
    leaving = proc_of(first_qr["node"])
    listed = await sessions(nc, settings)
    moved = [s["session_id"] for s in listed if proc_of(s["node"] or "") == leaving and s["session_id"] != "unscanned"]
    started = time.monotonic()
    stack.procs[leaving].signal(15)
    await all_connected(nc, settings, avoid=leaving, besides="unscanned")
    handoff = time.monotonic() - started
    assert handoff < settings.lease_ttl, f"handoff took {handoff:.1f}s: it must not wait for lease expiry"
    assert stack.procs[leaving].wait(10) == 0
    for sid in moved:
        assert any("shutdown" in (e.get("reason") or "") for e in cluster.of(sid, "status"))

    resumed = await cluster.wait_for(
        "unscanned", "status", lambda e: bool(e.get("qr")) and proc_of(e["node"]) != leaving, timeout=15
    )
    await call_ok(nc, s.sim("unscanned", "scan"), {})
    connected = await cluster.wait_state("unscanned", "connected", timeout=15)
    assert connected["node"] == resumed["node"]
    assert await overlaps(nc, settings) == 0


async def test_paused_owner_never_acts_again(cluster, stack, nc, settings) -> None:
    listed = await sessions(nc, settings)
    frozen = proc_of(listed[0]["node"])
    old_ids = {s["node"] for s in listed if proc_of(s["node"]) == frozen}
    moved = [s["session_id"] for s in listed if proc_of(s["node"]) == frozen]
    stack.pause(frozen)
    try:
        await all_connected(nc, settings, avoid=frozen)
    finally:
        resumed_at = len(cluster.events)
        stack.resume(frozen)
    await asyncio.sleep(settings.lease_ttl + 1)  # time for the old owner to misbehave, if it would

    # Anything the paused incarnation still emits (at most an event whose write it made before
    # the pause) carries its old fencing token, older than the new owner's: consumers drop it.
    newest = {}
    for _, body in cluster.events:
        if body.get("token"):
            newest[body["session_id"]] = max(newest.get(body["session_id"], ""), body["token"])
    late = [body for _, body in cluster.events[resumed_at:] if body.get("node") in old_ids]
    assert all(body["token"] < newest[body["session_id"]] for body in late), late
    listed = await sessions(nc, settings)
    assert all(s["state"] == "connected" and s["node"] not in old_ids for s in listed)
    assert await overlaps(nc, settings) == 0
    # The node came back under a new identity and serves again (it may claim sessions anew).
    assert stack.procs[frozen].alive
    docs = {s["session_id"]: s for s in listed}
    assert all(docs[sid]["node"] not in old_ids for sid in moved)


async def test_scaling_from_one_node_to_three_reaches_a_fair_share(stack, nc, settings) -> None:
    stack.start("wa-sim")
    stack.start("session-actor", "node1")
    tap = await EventTap(nc, settings).start()
    await wait_until(lambda: call(nc, settings.subjects.session_list, {}, timeout=2), timeout=60, what="node1")
    count = 15
    await asyncio.gather(*(pair(nc, settings, tap, f"r{i:02d}") for i in range(count)))
    assert {proc_of(s["node"]) for s in await all_connected(nc, settings, count)} == {"node1"}
    stack.start("session-actor", "node2")
    stack.start("session-actor", "node3")

    async def balanced() -> Counter | None:
        listed = await sessions(nc, settings)
        spread = Counter(proc_of(s["node"]) for s in listed if s["state"] == "connected")
        return spread if sum(spread.values()) == count and len(spread) == 3 and max(spread.values()) <= 5 else None

    spread = await wait_until(balanced, timeout=30, interval=0.2, what="a fair share on three nodes")
    assert sorted(spread.values()) == [5, 5, 5]
    assert await overlaps(nc, settings) == 0
    await tap.stop()


async def test_whole_cluster_restart_restores_every_session_without_pairing(cluster, stack, nc, settings) -> None:
    for i in range(3):
        stack.procs[f"node{i + 1}"].signal(15)
    for i in range(3):
        assert stack.procs[f"node{i + 1}"].wait(20) == 0
    seen = len(cluster.events)
    for i in range(3):
        stack.start("session-actor", f"node{i + 1}")
    await all_connected(nc, settings)
    later = [body for _, body in cluster.events[seen:] if body.get("state") == "pairing"]
    assert later == []
    assert await overlaps(nc, settings) == 0
