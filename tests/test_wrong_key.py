"""A node started with vault keys that cannot open the stored credentials takes no sessions
(and says so, in its lease and its log); the sessions stay with, or go to, nodes that can open
them, without pairing again."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from contracts.internal import NodeLease
from services.common.cluster import NODE
from services.credentials.vault import new_key_entry
from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.scenarios import pair

pytestmark = pytest.mark.slow

SIDS = ("k1", "k2", "k3")


async def unfit_reason(nc, settings, name: str) -> str | None:
    kv = await nc.jetstream().key_value(settings.subjects.leases_bucket)
    for key in await kv.keys():
        if key.startswith(NODE + name + "-"):
            entry = await kv.get(key)
            if entry.value:
                return msgspec.json.decode(entry.value, type=NodeLease).unfit
    return None


async def test_a_node_with_a_wrong_key_takes_no_session_and_a_right_one_takes_them_back(stack, nc, settings) -> None:
    s = settings.subjects
    stack.start("wa-sim")
    stack.start("session-actor", "right")
    tap = await EventTap(nc, settings).start()
    await wait_until(lambda: call(nc, s.session_list, {}, timeout=2), timeout=60, what="node right")
    for sid in SIDS:
        await pair(nc, settings, tap, sid)

    # Same key id, other bytes: the classic copy-paste mistake.
    stack.start("session-actor", "wrong", vault_keys=new_key_entry("test1"))
    reason = await wait_until(lambda: unfit_reason(nc, settings, "wrong"), timeout=30, what="the wrong node's lease")
    assert "does not open credentials sealed with 'test1'" in reason
    assert "THIS NODE TAKES NO SESSIONS" in stack.procs["wrong"].log_path.read_text()

    seen = {sid: len(tap.of(sid, "status")) for sid in SIDS}
    stack.stop("right")  # every session is released; only the wrong node is left
    for sid in SIDS:
        await tap.wait_state(sid, "disconnected", after=seen[sid])
    await asyncio.sleep(2.0)  # several placement rounds of the wrong node
    listed = (await call_ok(nc, s.session_list, {}))["sessions"]
    assert {x["state"] for x in listed} == {"disconnected"}
    assert not any((x.get("node") or "").startswith("wrong-") for x in listed)
    assert not any(e.get("node", "").startswith("wrong-") for sid in SIDS for e in tap.of(sid, "status"))

    seen = {sid: len(tap.of(sid, "status")) for sid in SIDS}
    stack.start("session-actor", "right2")
    for sid in SIDS:
        back = await tap.wait_state(sid, "connected", timeout=60, after=seen[sid])
        assert back["node"].startswith("right2-")
        assert "pairing" not in tap.states(sid)[seen[sid] :]
    await tap.stop()
