"""A fresh system for a benchmark: embedded servers in a temp dir and real service processes."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from services.common.bus import ensure_topology
from services.common.config import Settings
from services.credentials.vault import new_key_entry
from services.devstack.servers import free_port, start_mongo, start_nats
from tests.support import EventTap, Stack, call, call_ok, wait_until

RESULTS = Path("bench-results")


@dataclass
class Bench:
    settings: Settings
    nc: NatsClient
    stack: Stack
    tap: EventTap
    work_dir: Path


@asynccontextmanager
async def system(name: str, nodes: int = 1, **overrides: Any) -> AsyncIterator[Bench]:
    """Servers and services for one benchmark; everything is torn down afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"wa-bench-{name}-") as tmp:
        work = Path(tmp)
        nats_server = start_nats(work / "nats", free_port())
        mongo_server = start_mongo(work / "mongo", free_port())
        values: dict[str, Any] = {
            "nats_url": nats_server.url,
            "mongo_url": mongo_server.url,
            "prefix": "bench",
            "sim_prefix": "benchsim",
            "data_dir": work / "data",
            "vault_keys": new_key_entry("bench"),
            "log_level": "WARNING",
            **overrides,
        }
        settings = Settings(**values)
        nc = await nats.connect(settings.nats_url)
        await ensure_topology(nc.jetstream(), settings)
        stack = Stack(settings, RESULTS / "logs" / name)
        tap = await EventTap(nc, settings).start()
        try:
            stack.start("wa-sim")
            stack.start("persistence")
            stack.start("outbound-queue")
            stack.start("health-monitor", health_port=free_port())
            for i in range(nodes):
                stack.start("session-actor", f"node{i + 1}")
            await wait_until(lambda: call(nc, settings.subjects.session_list, {}, timeout=2), 60, what="services")
            yield Bench(settings, nc, stack, tap, work)
        finally:
            await tap.stop()
            stack.stop_all()
            await nc.close()  # the services are gone: nothing left to drain
            nats_server.stop()
            mongo_server.stop()


async def pair_many(bench: Bench, sids: list[str], concurrency: int = 32) -> None:
    """Create and link sessions through the simulated phone, several at a time."""
    s = bench.settings.subjects
    limit = asyncio.Semaphore(concurrency)

    async def pair(sid: str) -> None:
        # As the contract says: a session between owners (new sessions are being spread over
        # the nodes meanwhile) answers session_unavailable; retry.
        for _ in range(20):
            reply = await call(bench.nc, s.session(sid, "pair"), {"method": "qr"}, timeout=30)
            if reply.ok:
                return
            assert reply.error is not None and reply.error.code == "session_unavailable", reply.error
            await asyncio.sleep(0.5)
        raise AssertionError(f"{sid}: still between owners after 20 pair attempts")

    async def one(sid: str) -> None:
        async with limit:
            await call_ok(bench.nc, s.session_create, {"session_id": sid})
            await pair(sid)
            await bench.tap.wait_for(sid, "status", lambda e: bool(e.get("qr")), timeout=60)
            await call_ok(bench.nc, s.sim(sid, "scan"), {})
            await bench.tap.wait_state(sid, "connected", timeout=120)

    await asyncio.gather(*(one(sid) for sid in sids))


def host_speed_ms() -> float:
    """A fixed pure-Python workload, timed (best of 3): this machine is a VM whose speed
    varies with its neighbours, so results are only comparable next to this number."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(2_000_000))
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p99/max of a sample, in the sample's unit."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"p50": q[49], "p99": q[98], "max": ordered[-1]}


@dataclass
class Report:
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        print("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps({"name": self.name, "at": self.started, "rows": self.rows}, indent=2))
        return path


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
