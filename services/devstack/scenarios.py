"""Whole systems and the steps every test or benchmark on one repeats: a fresh system in a
temporary directory (`fresh_system`), the services a send goes through
(`start_sending_stack`), and sessions linked through the simulated phone (`pair`,
`pair_many`)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient

from services.common.bus import ensure_topology
from services.common.config import Settings
from services.common.connection import connect_nats
from services.credentials.vault import new_key_entry
from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.processes import REPO_ROOT, Stack
from services.devstack.servers import NatsCluster, free_port, start_mongo, start_nats, start_nats_cluster


@dataclass
class RunningSystem:
    """A system under measurement: its settings, a client, its processes and every event."""

    settings: Settings
    nc: NatsClient
    stack: Stack
    tap: EventTap
    work_dir: Path
    nats_cluster: NatsCluster | None = None  # when it runs on several NATS servers


@asynccontextmanager
async def fresh_system(
    name: str,
    log_dir: Path,
    nodes: int = 1,
    nats_servers: int = 1,
    nats_config: str = "",
    code_root: Path = REPO_ROOT,
    **overrides: Any,
) -> AsyncIterator[RunningSystem]:
    """Embedded servers in a temp dir and every service, service logs under `log_dir/name`;
    everything is torn down afterwards. With `nats_servers` > 1, NATS is a loopback cluster
    and every stream and bucket has min(3, nats_servers) replicas; `nats_config` is added to a
    single server's config. `code_root` is the checkout whose services run (this one by
    default)."""
    with tempfile.TemporaryDirectory(prefix=f"wa-bench-{name}-") as tmp:
        work = Path(tmp)
        cluster = start_nats_cluster(work / "nats", nats_servers) if nats_servers > 1 else None
        nats_servers_run = cluster.members if cluster is not None else [start_nats(work / "nats", free_port(), nats_config)]
        mongo_server = start_mongo(work / "mongo", free_port())
        values: dict[str, Any] = {
            "nats_url": ",".join(server.url for server in nats_servers_run),
            "js_replicas": min(3, nats_servers),
            "mongo_url": mongo_server.url,
            "prefix": "bench",
            "sim_prefix": "benchsim",
            "data_dir": work / "data",
            "vault_keys": new_key_entry("bench"),
            "log_level": "WARNING",
            **overrides,
        }
        settings = Settings(**values)
        nc = await connect_nats(settings)
        await ensure_topology(nc.jetstream(), settings)
        stack = Stack(settings, log_dir / name, code_root)
        tap = await EventTap(nc, settings).start()
        try:
            stack.start_all(nodes)
            await wait_until(lambda: call(nc, settings.subjects.session_list, {}, timeout=2), 60, what="services")
            yield RunningSystem(settings, nc, stack, tap, work, cluster)
        finally:
            await tap.stop()
            stack.stop_all()
            await nc.close()  # the services are gone: nothing left to drain
            for server in nats_servers_run:
                server.stop()
            mongo_server.stop()


async def start_sending_stack(stack: Stack, nc: NatsClient, settings: Settings, sids: list[str]) -> EventTap:
    """The services a send goes through, one session-actor node, and `sids` paired."""
    await ensure_topology(nc.jetstream(), settings)
    stack.start("wa-sim")
    stack.start("outbound-queue")
    stack.start("persistence")
    stack.start("session-actor", "node1")
    tap = await EventTap(nc, settings).start()
    await wait_until(lambda: call(nc, settings.subjects.session_list, {}, timeout=2), timeout=60, what="node1")
    for sid in sids:
        await pair(nc, settings, tap, sid)
    return tap


async def pair(nc: NatsClient, settings: Settings, tap: EventTap, sid: str, label: str = "") -> None:
    """Create `sid` (if needed) and link it through the simulated phone: ends `connected`."""
    s = settings.subjects
    await wait_until(lambda: call(nc, s.sim_stats, {"refs": False}, timeout=2), timeout=30, what="the simulator")
    reply = await call(nc, s.session_create, {"session_id": sid, "label": label})
    assert reply.ok or reply.error.code == "conflict", reply.error
    await call_ok(nc, s.session(sid, "pair"), {"method": "qr"}, timeout=30)
    await tap.wait_for(sid, "status", lambda e: bool(e.get("qr")), timeout=30)
    await call_ok(nc, s.sim(sid, "scan"), {})
    await tap.wait_state(sid, "connected", timeout=30)


async def pair_many(system: RunningSystem, sids: list[str], concurrency: int = 32) -> None:
    """Create and link sessions through the simulated phone, several at a time."""
    s = system.settings.subjects
    limit = asyncio.Semaphore(concurrency)

    async def pair_one(sid: str) -> None:
        # As the contract says: a session between owners (new sessions are being spread over
        # the nodes meanwhile) answers session_unavailable; retry.
        for _ in range(20):
            # The session API may hold a pair request up to its ACTOR_TIMEOUT (40 s).
            reply = await call(system.nc, s.session(sid, "pair"), {"method": "qr"}, timeout=45)
            if reply.ok:
                return
            assert reply.error is not None and reply.error.code == "session_unavailable", reply.error
            await asyncio.sleep(0.5)
        raise AssertionError(f"{sid}: still between owners after 20 pair attempts")

    async def one(sid: str) -> None:
        async with limit:
            await call_ok(system.nc, s.session_create, {"session_id": sid})
            await pair_one(sid)
            await system.tap.wait_for(sid, "status", lambda e: bool(e.get("qr")), timeout=60)
            await call_ok(system.nc, s.sim(sid, "scan"), {})
            await system.tap.wait_state(sid, "connected", timeout=120)

    await asyncio.gather(*(one(sid) for sid in sids))
