"""Helpers for tests that drive the real services over NATS."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient
from nats.js.api import DeliverPolicy
from pydantic import SecretStr

from contracts.envelope import Reply
from services.common.bus import encode, ensure_topology
from services.common.config import Settings
from services.devstack.servers import free_port

ROOT = Path(__file__).resolve().parent.parent

SERVICES = {
    "session-actor": "services.session_actor",
    "outbound-queue": "services.outbound_queue",
    "health-monitor": "services.health_monitor",
    "persistence": "services.persistence",
    "wa-sim": "services.wa_sim",
}


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The WA_* environment that reproduces `settings` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
    for name in type(settings).model_fields:
        value = overrides.get(name, getattr(settings, name))
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"WA_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class Stack:
    """Starts service processes like `make run` does, and lets tests kill/stop/pause them."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: dict[str, Proc] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, service: str, name: str | None = None, **overrides: Any) -> Proc:
        name = name or service
        assert name not in self.procs or not self.procs[name].alive, f"{name} already running"
        log_path = self.log_dir / f"{name}.log"
        env = settings_env(self.settings, **overrides)
        if service == "session-actor":
            env["WA_NODE_NAME"] = overrides.get("node_name", name)
        popen = subprocess.Popen(
            [sys.executable, "-m", SERVICES[service]],
            cwd=ROOT,
            env=env,
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = Proc(name, popen, log_path)
        return self.procs[name]

    def start_all(self, nodes: int = 1) -> None:
        self.start("wa-sim")
        self.start("persistence")
        self.start("outbound-queue")
        self.start("health-monitor", health_port=free_port())
        for i in range(nodes):
            self.start("session-actor", f"node{i + 1}")

    def stop(self, name: str, timeout: float = 20.0) -> int | None:
        proc = self.procs[name]
        proc.signal(signal.SIGTERM)
        code = proc.wait(timeout)
        if code is None:
            proc.signal(signal.SIGKILL)
            proc.wait(5)
        return code

    def kill(self, name: str) -> None:
        self.procs[name].signal(signal.SIGKILL)
        self.procs[name].wait(5)

    def pause(self, name: str) -> None:
        self.procs[name].signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].signal(signal.SIGCONT)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.signal(signal.SIGCONT)
            proc.signal(signal.SIGTERM)
        for proc in self.procs.values():
            if proc.wait(20) is None:
                proc.signal(signal.SIGKILL)
                proc.wait(5)

    def logs(self, tail: int = 80) -> str:
        out = []
        for proc in self.procs.values():
            lines = proc.log_path.read_text(errors="replace").splitlines() if proc.log_path.exists() else []
            out.append(f"----- {proc.name} (last {tail} lines) -----")
            out.extend(lines[-tail:])
        return "\n".join(out)


async def wait_until(
    predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail with `what`.

    A predicate that raises (a service not answering yet) counts as not yet.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if asyncio.iscoroutine(last):
                last = await last
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate!r} (last: {last!r})")


async def call(nc: NatsClient, subject: str, body: Any = None, timeout: float = 10.0) -> Reply:
    """A v1 request; returns the decoded envelope whatever it says."""
    payload = body if isinstance(body, bytes) else encode({} if body is None else body)
    msg = await nc.request(subject, payload, timeout=timeout)
    return msgspec.json.decode(msg.data, type=Reply)


async def call_ok(nc: NatsClient, subject: str, body: Any = None, timeout: float = 10.0) -> Any:
    reply = await call(nc, subject, body, timeout)
    assert reply.ok, f"{subject} answered {reply.error}"
    return reply.data


class EventTap:
    """Collects every event of a deployment from the start of its events stream."""

    def __init__(self, nc: NatsClient, settings: Settings) -> None:
        self._nc = nc
        self._settings = settings
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._sub: Any = None

    async def start(self) -> EventTap:
        js = self._nc.jetstream()

        async def on_msg(msg: Any) -> None:
            self.events.append((msg.subject, msgspec.json.decode(msg.data)))

        self._sub = await js.subscribe(
            self._settings.subjects.events_all,
            cb=on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def of(self, sid: str, kind: str) -> list[dict[str, Any]]:
        subject = self._settings.subjects.event(sid, kind)
        return [body for subj, body in self.events if subj == subject]

    def states(self, sid: str) -> list[str]:
        return [e["state"] for e in self.of(sid, "status")]

    async def wait_for(
        self, sid: str, kind: str, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.of(sid, kind) if match(e)), None)

        return await wait_until(found, timeout, what=f"{kind} event of {sid}")

    async def wait_state(self, sid: str, state: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        """The first `state` status event of `sid` after the first `after` status events."""

        def found() -> dict[str, Any] | None:
            events = self.of(sid, "status")[after:]
            return next((e for e in events if e["state"] == state), None)

        return await wait_until(found, timeout, what=f"{sid} reaching {state}")


class DevStack:
    """`python -m services.devstack run`, the command behind `make run`, as a test process."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = settings_env(self.settings)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "services.devstack", "run"],
            cwd=ROOT,
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def stop(self, timeout: float = 60.0) -> int | None:
        """Ctrl-C, as a user would press it (waited for off the loop: the test's NATS client
        must keep answering the server's pings meanwhile)."""
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGINT)
        try:
            return await asyncio.to_thread(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


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
