"""Clean stops: `make run` ends every process it started and frees every port within 15 s,
on Ctrl-C (mid-traffic) and when it is killed itself; every service exits within seconds of
SIGTERM even with NATS gone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from services.common.config import Settings
from services.common.connection import connect_nats
from services.devstack.probes import EventTap, call, call_ok, wait_until
from services.devstack.processes import MakeRun, Stack
from services.devstack.scenarios import pair
from services.devstack.servers import free_port, port_open, start_mongo, start_nats

pytestmark = pytest.mark.slow

STOP_LIMIT = 15.0


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan nobody reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def all_gone(pids: set[int], ports: list[int]) -> float:
    started = time.monotonic()

    def gone() -> bool:
        return not any(running(pid) for pid in pids) and not any(port_open(port) for port in ports)

    await wait_until(gone, timeout=STOP_LIMIT, interval=0.1, what="every process gone and every port free")
    return time.monotonic() - started


async def start_make_run(settings: Settings, tmp_path: Path) -> tuple[MakeRun, Settings, list[int]]:
    nats_port, mongo_port, health_port = free_port(), free_port(), free_port()
    local = settings.model_copy(
        update={
            "nats_url": f"nats://127.0.0.1:{nats_port}",
            "mongo_url": f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true",
            "health_port": health_port,
        }
    )
    run = MakeRun(local, tmp_path / "make-run.log", embedded={"nats_port": nats_port, "mongo_port": mongo_port})
    run.start()
    return run, local, [nats_port, mongo_port, health_port]


async def test_ctrl_c_mid_traffic_ends_every_process_and_frees_every_port(settings, tmp_path) -> None:
    run, local, ports = await start_make_run(settings, tmp_path)
    try:
        nc = await wait_until(lambda: connect_nats(local), timeout=60, what="the embedded NATS")
        await wait_until(lambda: call(nc, local.subjects.session_list, {}, timeout=2), timeout=60, what="services")
        tap = await EventTap(nc, local).start()
        await pair(nc, local, tap, "busy")

        async def traffic() -> None:
            for i in range(100_000):
                with contextlib.suppress(Exception):
                    await call(nc, local.subjects.send("busy"), {"id": f"t{i}", "to": "15550001111", "text": "x"}, 2)
                await asyncio.sleep(0.01)

        sending = asyncio.create_task(traffic())
        await tap.wait_for("busy", "outbound", lambda e: e["state"] == "sent" and e["id"] == "t20", timeout=30)
        pids = run.processes()
        assert len(pids) >= 8, pids  # make run, two servers, five services (and their shells)
        assert run.popen is not None
        os.killpg(run.popen.pid, signal.SIGINT)  # Ctrl-C in the terminal
        took = await all_gone(pids | {run.popen.pid}, ports)
        sending.cancel()
        # Trap: nats-py's close() raises ConnectionResetError once its server is gone.
        with contextlib.suppress(ConnectionResetError):
            await nc.close()
    finally:
        if run.popen is not None and run.popen.poll() is None:
            os.killpg(run.popen.pid, signal.SIGKILL)
    assert took < STOP_LIMIT, run.logs()[-3000:]


async def test_a_killed_make_run_leaves_no_process_and_no_port_behind(settings, tmp_path) -> None:
    run, local, ports = await start_make_run(settings, tmp_path)
    nc = await wait_until(lambda: connect_nats(local), timeout=60, what="the embedded NATS")
    await wait_until(lambda: call(nc, local.subjects.session_list, {}, timeout=2), timeout=60, what="services")
    await call_ok(nc, local.subjects.session_create, {"session_id": "orphan-check"})
    await nc.close()
    pids = run.processes()
    assert run.popen is not None
    run.popen.kill()  # the supervisor itself dies, with no chance to stop anything
    run.popen.wait()
    await all_gone(pids, ports)


async def test_every_service_exits_within_seconds_of_sigterm_when_nats_is_gone(settings, tmp_path) -> None:
    own_nats = start_nats(tmp_path / "nats", free_port())
    own_mongo = start_mongo(tmp_path / "mongo", free_port())
    local = settings.model_copy(update={"nats_url": own_nats.url, "mongo_url": own_mongo.url})
    stack = Stack(local, tmp_path / "logs")
    try:
        nc = await connect_nats(local)
        stack.start_all()
        await wait_until(lambda: call(nc, local.subjects.session_list, {}, timeout=2), timeout=60, what="services")
        # The health monitor serves HTTP once its start is over (a start cut short by NATS
        # going away is a failed start, exit 3, not the stop this test is about).
        monitor = stack.procs["health-monitor"].settings.health_port
        await wait_until(lambda: port_open(monitor), timeout=60, what="the health monitor started")
        await nc.close()
        own_nats.kill()
        for proc in stack.procs.values():
            proc.signal(signal.SIGTERM)
        started = time.monotonic()
        codes = {name: await asyncio.to_thread(proc.wait, 20) for name, proc in stack.procs.items()}
        took = time.monotonic() - started
    finally:
        stack.stop_all()
        own_mongo.stop()
    assert codes == dict.fromkeys(stack.procs, 0), stack.logs()
    assert took < 8, f"{took:.1f} s\n" + stack.logs()
