"""`python -m bench scale`: many simulated sessions on one node, and that node's crash.

One system with one session-actor node (production lease settings), the simulated WhatsApp,
the embedded NATS and the MongoDB-compatible dev server:

1. pairing: create and link `sessions` sessions through the simulated phone, `concurrency`
   at a time; the time for all of them and the rate;
2. idle: every process's CPU over `idle` seconds with nothing to send (in cores and per
   session per second), and the node's RSS per session;
3. crash: a second node starts and joins (the cluster then moves a fair share to it, as it
   would in production; the time until the spread is even is reported), then the first node
   gets SIGKILL; the time from the kill until every session is connected on the survivor.

Run: `python -m bench scale [--sessions 10000] [--idle 60] [--concurrency 16]` (64 pairings at a time saturate
2 cores at several thousand sessions).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from bench.cpu import idle_run
from bench.failover import poll, proc_of
from bench.results import SERVICE_LOGS, Report, host_speed_ms
from services.devstack.probes import all_sessions
from services.devstack.scenarios import RunningSystem, fresh_system, pair_many

SETTLE = 30.0  # after pairing, until the status writes and the database have caught up
RECOVERY_TIMEOUT = 600.0


async def spread(system: RunningSystem, sids: set[str]) -> Counter[str]:
    """Connected sessions per node process."""
    listed = await all_sessions(system.nc, system.settings.subjects.session_list, timeout=60)
    return Counter(proc_of(s["node"]) or "-" for s in listed if s["session_id"] in sids and s["state"] == "connected")


async def timed(check: Any, timeout: float) -> float | None:
    t0 = time.monotonic()
    return time.monotonic() - t0 if await poll(check, timeout, interval=1.0) else None


async def run(sessions: int = 10_000, idle: float = 60.0, concurrency: int = 16) -> Report:
    report = Report("scale")
    # A node hosts up to `node_capacity` sessions (1,000 by default): room for all of them.
    async with fresh_system("scale", SERVICE_LOGS, pacing_enabled=False, node_capacity=sessions) as system:
        sids = [f"s{i:05d}" for i in range(sessions)]
        wanted = set(sids)
        t0 = time.monotonic()
        await pair_many(system, sids, concurrency)
        pairing = time.monotonic() - t0
        await asyncio.sleep(SETTLE)
        quiet = await idle_run(system, sessions, idle)

        system.stack.start("session-actor", "node2")

        async def even() -> bool:
            counts = await spread(system, wanted)
            return sum(counts.values()) == sessions and len(counts) == 2 and abs(counts["node1"] - counts["node2"]) <= 1

        rebalance = await timed(even, RECOVERY_TIMEOUT)
        before = await spread(system, wanted)
        system.stack.kill("node1")

        async def recovered() -> bool:
            return (await spread(system, wanted))["node2"] == sessions

        failover = await timed(recovered, RECOVERY_TIMEOUT)
        after = await spread(system, wanted)
    report.add(
        sessions=sessions,
        pairing_s=pairing,
        paired_per_s=sessions / pairing,
        idle_cores=round(sum(quiet["cores"].values()), 4),
        idle_cores_by_process={k: round(v, 4) for k, v in sorted(quiet["cores"].items(), key=lambda kv: -kv[1])},
        idle_us_per_session_s={k: round(v, 2) for k, v in sorted(quiet["us_per_session_s"].items(), key=lambda kv: -kv[1])},
        node_rss_mb=round(quiet["node_rss_mb"], 1),
        node_rss_kb_per_session=round(quiet["node_rss_mb"] * 1000 / sessions, 1),
        rebalance_to_second_node_s=rebalance,
        killed_node_held=before.get("node1", 0),
        crash_recovered_s=failover,
        connected_after=dict(after),
        lease_ttl_s=system.settings.lease_ttl,
        host_speed_ms=host_speed_ms(),
    )
    report.save()
    return report
