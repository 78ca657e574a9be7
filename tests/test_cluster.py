"""The system on a three-server NATS cluster: what users see while JetStream is away, and
nothing lost when a server dies with its disk (the full run is `python -m bench cluster`)."""

from __future__ import annotations

import asyncio
import time

import httpx
import nats
import pytest

from services.devstack.chaos import NatsMemberKills, chaos
from services.devstack.probes import call_ok, wait_until
from services.devstack.scenarios import fresh_system, pair
from tests.conftest import FAST_TIMINGS

pytestmark = pytest.mark.slow


def health_is(port: int, status: int):
    async def check() -> bool:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"http://127.0.0.1:{port}/healthz", timeout=2)).status_code == status

    return check


async def test_while_jetstream_is_away_no_session_reads_connected_and_healthz_fails_then_both_recover(
    tmp_path,
) -> None:
    # One replica, as before the replicas setting: the server holding the leases bucket takes
    # JetStream away with it, while core NATS (the session API) still answers.
    async with fresh_system(
        "js-away", tmp_path / "logs", nodes=2, nats_servers=3, js_replicas=1, log_level="INFO", **FAST_TIMINGS
    ) as system:
        s, nc, cluster = system.settings, system.nc, system.nats_cluster
        assert cluster is not None
        health_port = system.stack.procs["health-monitor"].settings.health_port
        for sid in ("a1", "a2"):
            await pair(nc, s, system.tap, sid)
        assert await health_is(health_port, 200)()
        leader = (await nc.jetstream().stream_info(f"KV_{s.subjects.leases_bucket}")).cluster.leader
        index = [m.name for m in cluster.members].index(leader)
        # Asking through a server that stays up: the question is what the system answers, not
        # how fast this client would find another server (nats-py waits 2 s to reconnect).
        survivors = [m.url for m in cluster.members if m.name != leader]
        probe = await nats.connect(servers=survivors)

        cluster.kill(index)
        taken = time.monotonic()

        async def none_connected() -> bool:
            listed = (await call_ok(probe, s.subjects.session_list, {}, timeout=3))["sessions"]
            return all(x["state"] != "connected" for x in listed)

        await wait_until(none_connected, timeout=s.lease_ttl + 3, what="no session reading connected")
        assert time.monotonic() - taken < s.lease_ttl  # the first answers that changed
        # No node renewed after the kill: from `lease_self_stop` on, no node may answer
        # `connected` (the first ones to say so are the nodes whose last renewal was oldest).
        await asyncio.sleep(max(0.0, taken + s.lease_self_stop + 0.3 - time.monotonic()))
        for _ in range(4):  # the requests go to either node
            for sid in ("a1", "a2"):
                one = await call_ok(probe, s.subjects.session(sid, "get"), {}, timeout=3)
                assert one["state"] == "disconnected" and one["reason"].startswith("jetstream_unavailable"), one
        await wait_until(health_is(health_port, 503), timeout=s.lease_ttl, what="/healthz 503")

        cluster.restart(index)

        async def all_connected() -> bool:
            listed = (await call_ok(nc, s.subjects.session_list, {}, timeout=3))["sessions"]
            return all(x["state"] == "connected" for x in listed)

        await wait_until(all_connected, timeout=60, what="every session connected again")
        await wait_until(health_is(health_port, 200), timeout=15, what="/healthz 200")
        await probe.close()


async def test_a_server_killed_with_its_disk_loses_no_send_and_sends_none_twice(tmp_path) -> None:
    async with fresh_system(
        "cluster-smoke", tmp_path / "logs", nodes=2, nats_servers=3, pacing_enabled=False, sim_read_after=0.2,
        **FAST_TIMINGS,
    ) as system:  # fmt: skip
        assert system.nats_cluster is not None
        fault = NatsMemberKills(
            system.nats_cluster, system.nc, leader_of=system.settings.subjects.outbound_stream, down_for=2.0
        )
        result = await chaos(system, sessions=4, sends=400, fault=fault, every=4.0, settle=90.0)
    print(result.row(), fault.struck)
    assert result.kills >= 1, "the run was too short to kill a server"
    assert result.accepted == 400
    assert result.violations == []
    assert result.duplicates == 0 and result.overlaps == 0
    assert sum(result.terminal.values()) == 400
