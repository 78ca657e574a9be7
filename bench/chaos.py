"""`make chaos`: the chaos scenario (services/devstack/chaos.py) at full size.

3 nodes, 200 sessions, 10,000 sends, a node killed (SIGKILL) every few seconds and
restarted; every send's outcome is checked against what reached the simulated WhatsApp.
tests/test_chaos.py runs a small one in `make test`.
"""

from __future__ import annotations

from bench.results import SERVICE_LOGS, Report, host_speed_ms
from services.devstack.chaos import NodeKills, chaos
from services.devstack.scenarios import fresh_system


async def run(sessions: int = 200, sends: int = 10_000, nodes: int = 3, kill_every: float = 5.0) -> Report:
    report = Report("chaos")
    names = [f"node{i + 1}" for i in range(nodes)]
    # Pacing off (10,000 sends at 10/min/session would take an hour); recipients read what
    # they get, so every send can reach a terminal state.
    async with fresh_system("chaos", SERVICE_LOGS, nodes=nodes, pacing_enabled=False, sim_read_after=0.2) as bench:
        result = await chaos(bench, sessions, sends, NodeKills(bench.stack, names), kill_every, settle=300.0)
    report.add(**result.row(), host_speed_ms=host_speed_ms())
    for violation in result.violations[:50]:
        print("  VIOLATION", violation)
    report.save()
    return report
