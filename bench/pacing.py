"""Pacing with the default policy, measured where it matters: at (simulated) WhatsApp.

Sessions sit idle long enough to fill their token bucket, then each gets `sends` messages at
once. The benchmark listens on the simulator's wire (`<sim prefix>._wire.send`) and stamps
each message as it reaches WhatsApp, then checks, per session:

- the bucket: in no window did a session send more than `burst + per_minute * window / 60`
  (a full bucket plus what it refills meanwhile), for every window between two sends;
- the gap: no two sends closer than `min_gap - jitter`;
- the jitter: the gaps spread over the configured range (their minimum, maximum, spread)
  instead of landing on one value.

Run: `python -m bench pacing [--sessions 4] [--sends 25]` (about 2.5 minutes with defaults).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import defaultdict
from typing import Any

import msgspec

from bench.results import SERVICE_LOGS, Report
from contracts.queue import PacingPolicy
from services.devstack.probes import call_ok, wait_until
from services.devstack.scenarios import fresh_system, pair_many

# Timestamps are taken where the benchmark sees the wire, not inside the simulator.
TOLERANCE = 0.05


def over_budget(times: list[float], policy: PacingPolicy) -> int:
    """Windows [t_i, t_j] holding more sends than a full bucket plus its refill allows."""
    rate = policy.per_minute / 60.0
    bad = 0
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            allowed = policy.burst + rate * (times[j] - times[i] + TOLERANCE)
            if j - i + 1 > allowed + 1e-9:
                bad += 1
    return bad


async def run(sessions: int = 4, sends: int = 25) -> Report:
    report = Report("pacing")
    policy = PacingPolicy()  # the defaults every session gets unless its policy says otherwise
    async with fresh_system("pacing", SERVICE_LOGS, nodes=1) as bench:
        s = bench.settings.subjects
        sids = [f"p{i:02d}" for i in range(sessions)]
        await pair_many(bench, sids)
        arrived: dict[str, list[float]] = defaultdict(list)

        async def on_send(msg: Any) -> None:
            body = msgspec.json.decode(msg.data)
            arrived[body["ref"].rsplit("-", 1)[0]].append(time.monotonic())

        wire = await bench.nc.subscribe(s.sim_wire("send"), cb=on_send)
        # A bucket starts with one token (a session that just moved may have sent a moment
        # ago); wait until it is full so the burst is measured too.
        await asyncio.sleep(policy.burst * 60.0 / policy.per_minute + 2)
        for sid in sids:
            for n in range(sends):
                await call_ok(
                    bench.nc, s.send(sid), {"id": f"{sid}-{n}", "to": "15550001111", "text": f"paced {n}"}
                )
        expected = 1 + (sends - policy.burst) * 60.0 / policy.per_minute
        await wait_until(
            lambda: all(len(arrived[sid]) >= sends for sid in sids), timeout=expected * 2 + 60, interval=0.5
        )
        await wire.unsubscribe()
        for sid in sids:
            times = sorted(arrived[sid])
            gaps = [b - a for a, b in itertools.pairwise(times)]
            busiest = max(sum(1 for t in times if start <= t < start + 60.0 + TOLERANCE) for start in times)
            report.add(
                session=sid,
                sends=len(times),
                seconds=times[-1] - times[0],
                busiest_minute=busiest,
                allowed_per_minute=policy.burst + policy.per_minute,
                windows_over_budget=over_budget(times, policy),
                gap_min_s=min(gaps),
                gap_p50_s=statistics.median(gaps),
                gap_max_s=max(gaps),
                gap_stdev_s=statistics.stdev(gaps),
                first_burst_gaps_s=[round(g, 2) for g in gaps[: policy.burst - 1]],
                configured=f"{policy.per_minute:g}/min burst {policy.burst} gap {policy.min_gap:g}±{policy.jitter:g}s",
            )
        stats = await call_ok(bench.nc, s.sim_stats, {"refs": False})
        report.add(session="all", duplicates_at_whatsapp=stats["totals"]["duplicates"])
    report.save()
    return report
