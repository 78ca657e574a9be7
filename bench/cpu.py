"""`python -m bench cpu`: what one send costs each process, next to raw JetStream.

In one run, on one fresh system per code revision (pacing off, one session-actor node):

- raw: `sends` JetStream publishes (each awaiting its ack) with `in_flight` at a time, and a
  pull consumer fetching and acking them: the CPU of nats-server and of this process per
  message, the floor any durable send sits on;
- gateway: `sends` requests on `wa.send.<sid>` spread over `sessions` sessions, each followed
  to its `sent` event, `in_flight` at a time: the CPU of every process per send, the rate,
  and the intake's answer time;
- idle: the same sessions connected with nothing to send: CPU per idle session per second,
  per process, once the system has settled after the sends.

With `--baseline REV` the same measurements run first on a checkout of REV (a temporary git
worktree), so the rows of two revisions sit side by side on the same host in the same run.
Our services plus nats-server is the cost the project controls; the dev database (a
pure-Python MongoDB stand-in) and the simulator are reported apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from bench.proc_cpu import cpu_seconds, rss_bytes, servers_of
from bench.results import SERVICE_LOGS, Report, host_speed_ms, percentiles
from services.common.bus import encode
from services.devstack.processes import REPO_ROOT
from services.devstack.scenarios import RunningSystem, fresh_system, pair_many

TEXT = "x" * 120
SETTLE = 30.0  # after the sends, until persistence and the database have caught up
OURS = ("outbound-queue", "session-actor", "persistence", "health-monitor")


def processes(system: RunningSystem) -> dict[str, int]:
    """Every process of the system by role; a service's nodes add up under one name."""
    found = {f"{p.service}#{name}": p.popen.pid for name, p in system.stack.procs.items() if p.alive}
    found.update(servers_of(system.work_dir))
    found["client"] = os.getpid()
    return found


def snapshot(pids: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, pid in pids.items():
        with contextlib.suppress(OSError):
            out[key] = cpu_seconds(pid)
    return out


def by_role(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per role (service name, server, client)."""
    spent: dict[str, float] = {}
    for key, value in after.items():
        role = key.split("#")[0]
        spent[role] = spent.get(role, 0.0) + value - before.get(key, 0.0)
    return spent


async def raw_run(system: RunningSystem, sends: int, in_flight: int) -> dict[str, Any]:
    js = system.nc.jetstream()
    stream = f"RAW_{uuid.uuid4().hex[:6].upper()}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"raw.{stream}.>"]))
    psub = await js.pull_subscribe(f"raw.{stream}.>", durable="raw", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT))
    payload = encode({"id": "x" * 20, "session_id": "s001", "to": "15550001111", "text": TEXT})
    received = 0
    done = asyncio.Event()

    async def consume() -> None:
        nonlocal received
        while received < sends:
            try:
                batch = await psub.fetch(100, timeout=1)
            except TimeoutError:
                continue
            for msg in batch:
                await msg.ack()
            received += len(batch)
        done.set()

    limit = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with limit:
            await js.publish(f"raw.{stream}.{i % 100}", payload)

    pids = processes(system)
    before, t0 = snapshot(pids), time.perf_counter()
    consumer = asyncio.create_task(consume())
    await asyncio.gather(*(one(i) for i in range(sends)))
    await done.wait()
    elapsed = time.perf_counter() - t0
    spent = by_role(before, snapshot(pids))
    await consumer
    await js.delete_stream(stream)
    return {"rate": sends / elapsed, "ms_per_msg": {k: v * 1000 / sends for k, v in spent.items() if v > 0}}


async def gateway_run(system: RunningSystem, sids: list[str], sends: int, in_flight: int) -> dict[str, Any]:
    s = system.settings.subjects
    waiting: dict[str, asyncio.Future[None]] = {}

    async def on_outbound(msg: Any) -> None:
        body = msgspec.json.decode(msg.data)
        future = waiting.get(body.get("id", ""))
        if body.get("state") == "sent" and future is not None and not future.done():
            future.set_result(None)

    sub = await system.nc.subscribe(s.event("*", "outbound"), cb=on_outbound)
    answers: list[float] = []
    limit = asyncio.Semaphore(in_flight)
    tag = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        async with limit:
            send_id = f"{tag}-{i}"
            waiting[send_id] = asyncio.get_running_loop().create_future()
            asked = time.perf_counter()
            body = encode({"id": send_id, "to": "15550001111", "text": TEXT})
            reply = await system.nc.request(s.send(sids[i % len(sids)]), body, timeout=60)
            answers.append((time.perf_counter() - asked) * 1000)
            assert b'"ok":true' in reply.data, reply.data
            await asyncio.wait_for(waiting[send_id], 300)

    pids = processes(system)
    before, t0 = snapshot(pids), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(sends)))
    elapsed = time.perf_counter() - t0
    during = snapshot(pids)
    await asyncio.sleep(SETTLE)  # what the sends still cost afterwards (persistence catching up)
    after = snapshot(pids)
    await sub.unsubscribe()
    spent = by_role(before, after)
    intake = percentiles(answers)
    return {
        "rate": sends / elapsed,
        "intake_p50_ms": intake["p50"],
        "intake_p99_ms": intake["p99"],
        "ms_per_send": {k: v * 1000 / sends for k, v in spent.items() if v > 0},
        "ms_per_send_during": {k: v * 1000 / sends for k, v in by_role(before, during).items() if v > 0},
    }


async def idle_run(system: RunningSystem, sessions: int, seconds: float) -> dict[str, Any]:
    pids = processes(system)
    before, t0 = snapshot(pids), time.perf_counter()
    await asyncio.sleep(seconds)
    spent = by_role(before, snapshot(pids))
    wall = time.perf_counter() - t0
    node_rss = sum(rss_bytes(pid) for key, pid in pids.items() if key.startswith("session-actor"))
    return {
        "cores": {k: v / wall for k, v in spent.items() if v > 0},
        "us_per_session_s": {k: v * 1e6 / wall / sessions for k, v in spent.items() if v > 0},
        "node_rss_mb": node_rss / 1e6,
    }


def controlled(ms: dict[str, float]) -> float:
    """What the project controls: our services plus nats-server."""
    return sum(v for k, v in ms.items() if k in OURS or k == "nats-server")


@contextlib.contextmanager
def checkout(rev: str | None) -> Iterator[Path]:
    """This checkout, or REV in a temporary git worktree (removed afterwards)."""
    if rev is None:
        yield REPO_ROOT
        return
    with tempfile.TemporaryDirectory(prefix="wa-bench-rev-") as tmp:
        where = Path(tmp) / "code"
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(where), rev], check=True)
        try:
            yield where
        finally:
            subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(where)], check=False)


async def measure(report: Report, label: str, root: Path, sessions: int, sends: int, in_flight: int, idle: float) -> None:
    async with fresh_system(f"cpu-{label}", SERVICE_LOGS, code_root=root, pacing_enabled=False) as system:
        sids = [f"c{i:04d}" for i in range(sessions)]
        await pair_many(system, sids)
        await gateway_run(system, sids, min(sends, 300), 16)  # warm up connections and consumers
        await asyncio.sleep(SETTLE)
        raw = await raw_run(system, sends, in_flight)
        ours = await gateway_run(system, sids, sends, in_flight)
        quiet = await idle_run(system, sessions, idle)
    floor = sum(raw["ms_per_msg"].values())
    report.add(
        code=label,
        sessions=sessions,
        sends=sends,
        in_flight=in_flight,
        sends_per_s=ours["rate"],
        raw_per_s=raw["rate"],
        intake_p50_ms=ours["intake_p50_ms"],
        intake_p99_ms=ours["intake_p99_ms"],
        raw_ms_per_msg=floor,
        services_and_nats_ms_per_send=controlled(ours["ms_per_send"]),
        times_raw=controlled(ours["ms_per_send"]) / floor,
        database_ms_per_send=ours["ms_per_send"].get("database", 0.0),
        simulator_ms_per_send=ours["ms_per_send"].get("wa-sim", 0.0),
        client_ms_per_send=ours["ms_per_send"].get("client", 0.0),
        split_ms_per_send={k: round(v, 3) for k, v in sorted(ours["ms_per_send"].items(), key=lambda kv: -kv[1])},
        split_during_sends={k: round(v, 3) for k, v in sorted(ours["ms_per_send_during"].items(), key=lambda kv: -kv[1])},
        raw_split_ms={k: round(v, 3) for k, v in raw["ms_per_msg"].items()},
        idle_cores=round(sum(quiet["cores"].values()), 4),
        idle_split_us_per_session_s={k: round(v, 2) for k, v in sorted(quiet["us_per_session_s"].items(), key=lambda kv: -kv[1])},
        node_rss_mb=round(quiet["node_rss_mb"], 1),
        host_speed_ms=host_speed_ms(),
    )


async def run(
    sessions: int = 100, sends: int = 3000, in_flight: int = 128, idle: float = 20.0, baseline: str | None = None
) -> Report:
    report = Report("cpu")
    for label, rev in ((f"baseline {baseline}", baseline), ("this checkout", None)) if baseline else (("this checkout", None),):
        with checkout(rev) as root:
            await measure(report, label, root, sessions, sends, in_flight, idle)
    if baseline and len(report.rows) == 2:
        old, new = report.rows
        report.add(code="ratio new/old", sends_per_s=new["sends_per_s"] / old["sends_per_s"],
                   services_and_nats_ms_per_send=new["services_and_nats_ms_per_send"] / old["services_and_nats_ms_per_send"])  # fmt: skip
    report.save()
    return report
