"""`python -m bench cluster`: NATS servers die under load, disks included.

Three nats-server processes in a loopback cluster, every stream and bucket with 3 replicas,
two session-actor nodes, `sessions` sessions sending continuously (pacing off). A server is
killed with SIGKILL every `every` seconds (the first time the leader of the outbound
stream, then the next one in turn), its data folder is deleted, and it is started again
`down_for` seconds later, empty: JetStream copies the streams back to it. The oracle of
the chaos scenario (services/devstack/chaos.py) checks every send; the report adds what
clients and sessions saw.
"""

from __future__ import annotations

from bench.results import SERVICE_LOGS, Report, host_speed_ms
from services.devstack.chaos import NatsMemberKills, chaos
from services.devstack.scenarios import fresh_system


async def run(sessions: int = 20, sends: int = 4000, every: float = 10.0, down_for: float = 5.0) -> Report:
    report = Report("cluster")
    async with fresh_system(
        "cluster", SERVICE_LOGS, nodes=2, nats_servers=3, pacing_enabled=False, sim_read_after=0.2
    ) as system:
        assert system.nats_cluster is not None
        fault = NatsMemberKills(
            system.nats_cluster, system.nc, leader_of=system.settings.subjects.outbound_stream, down_for=down_for
        )
        result = await chaos(system, sessions, sends, fault, every, settle=300.0)
        lease_ttl = system.settings.lease_ttl
    report.add(
        **result.row(),
        lost=result.accepted - sum(result.terminal.values()),
        servers_killed=",".join(fault.struck),
        disks_wiped=True,
        lease_ttl_s=lease_ttl,
        host_speed_ms=host_speed_ms(),
    )
    for violation in result.violations[:50]:
        print("  VIOLATION", violation)
    report.save()
    return report
