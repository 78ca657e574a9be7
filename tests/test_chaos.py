"""A short chaos run (the full one is `make chaos`): nodes killed with SIGKILL while sending."""

from __future__ import annotations

import pytest

from services.common.bus import ensure_topology
from services.devstack.chaos import NodeKills, chaos
from services.devstack.probes import EventTap, call, wait_until
from services.devstack.scenarios import RunningSystem
from tests.conftest import make_settings

pytestmark = pytest.mark.slow


async def test_every_send_ends_once_in_order_and_never_twice_while_nodes_die(stack, nc, tmp_path, infra) -> None:
    settings = make_settings(infra, tmp_path, pacing_enabled=False, sim_read_after=0.2)
    stack.settings = settings
    await ensure_topology(nc.jetstream(), settings)
    stack.start("wa-sim")
    stack.start("outbound-queue")
    stack.start("persistence")
    nodes = ["node1", "node2", "node3"]
    for name in nodes:
        stack.start("session-actor", name)
    tap = await EventTap(nc, settings).start()
    await wait_until(lambda: call(nc, settings.subjects.session_list, {}, timeout=2), timeout=60, what="nodes")
    system = RunningSystem(settings, nc, stack, tap, tmp_path)
    result = await chaos(system, sessions=12, sends=1200, fault=NodeKills(stack, nodes), every=1.5)
    print(result.row())
    for violation in result.violations[:20]:
        print("VIOLATION", violation)
    stuck = {v.split("-")[0] for v in result.violations}
    for sid in sorted(stuck)[:3]:
        print("STATUS", sid, [(e["state"], e.get("node"), e.get("reason")) for e in tap.of(sid, "status")][-8:])
        print("OUTBOUND", sid, [(e["id"], e["state"]) for e in tap.of(sid, "outbound")][-12:])
    assert result.kills >= 2, "the run was too short to kill anything"
    assert result.accepted == 1200
    assert result.violations == []
    assert result.duplicates == 0 and result.overlaps == 0
    assert sum(result.terminal.values()) == 1200
    await tap.stop()
