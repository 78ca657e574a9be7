"""Service processes: the environment each one gets, starting and stopping them one by one
(`Stack`, for tests and benchmarks) and `make run` itself as a child process (`MakeRun`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from services.common.config import Settings
from services.devstack.servers import free_port

# Children run from the checkout, so `python -m services...` imports this code.
REPO_ROOT = Path(__file__).resolve().parents[2]

NODE_SERVICE = "session-actor"
MONITOR_SERVICE = "health-monitor"
GATEWAY_SERVICE = "http-gateway"
# What runs each service, in the order a whole system starts them: the simulator first (nodes
# connect to it), the session-actor nodes last (as many as asked).
SERVICE_MODULES = {
    "wa-sim": "services.wa_sim",
    "persistence": "services.persistence",
    "outbound-queue": "services.outbound_queue",
    MONITOR_SERVICE: "services.health_monitor",
    GATEWAY_SERVICE: "services.http_gateway",
    NODE_SERVICE: "services.session_actor",
}


def child_env(base: Mapping[str, str], **settings: Any) -> dict[str, str]:
    """`base` with `WA_<NAME>` set for each of `settings`: the environment of a service process."""
    env = dict(base)
    for name, value in settings.items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"WA_{name.upper()}"] = str(value)
    # Service logs reach a pipe or file as they happen, not in 8 KB blocks.
    env["PYTHONUNBUFFERED"] = "1"
    env["WA_SUPERVISOR_PID"] = str(os.getpid())  # the child stops when this process is gone
    return env


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The WA_* environment that reproduces `settings` in a child process."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
    values = {name: overrides.get(name, getattr(settings, name)) for name in type(settings).model_fields}
    return child_env(inherited, **{name: value for name, value in values.items() if value is not None})


def http_ports(service: str) -> dict[str, int]:
    """Free ports for what a service process serves over HTTP: the health monitor's port
    (its endpoints, dashboard and metrics), the http-gateway's API port and metrics port,
    or the metrics port of any other service. Several systems, and several nodes of one,
    run side by side on one machine."""
    if service == MONITOR_SERVICE:
        return {"health_port": free_port()}
    if service == GATEWAY_SERVICE:
        return {"http_port": free_port(), "metrics_port": free_port()}
    return {"metrics_port": free_port()}


def metrics_url(service: str, settings: Settings) -> str:
    """Where a service process with `settings` serves its metrics."""
    if service == MONITOR_SERVICE:
        return f"http://{settings.health_host}:{settings.health_port}/metrics"
    return f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"


class Proc:
    def __init__(
        self, name: str, service: str, popen: subprocess.Popen[bytes], log_path: Path, settings: Settings
    ) -> None:
        self.name = name
        self.service = service
        self.popen = popen
        self.log_path = log_path
        self.settings = settings  # as the process has them (its own ports included)

    @property
    def metrics_url(self) -> str:
        return metrics_url(self.service, self.settings)

    @property
    def http_url(self) -> str:
        """The http-gateway's API."""
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

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

    def __init__(self, settings: Settings, log_dir: Path, code_root: Path = REPO_ROOT) -> None:
        self.settings = settings
        self.log_dir = log_dir
        # Whose services run: this checkout, or another one (a benchmark comparing revisions).
        self.code_root = code_root
        self.procs: dict[str, Proc] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, service: str, name: str | None = None, **overrides: Any) -> Proc:
        name = name or service
        assert name not in self.procs or not self.procs[name].alive, f"{name} already running"
        log_path = self.log_dir / f"{name}.log"
        overrides = {**http_ports(service), **overrides}
        env = settings_env(self.settings, **overrides)
        if service == NODE_SERVICE:
            env["WA_NODE_NAME"] = overrides.get("node_name", name)
        popen = subprocess.Popen(
            [sys.executable, "-m", SERVICE_MODULES[service]],
            cwd=self.code_root,
            env=env,
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = Proc(name, service, popen, log_path, self.settings.model_copy(update=overrides))
        return self.procs[name]

    def start_all(self, nodes: int = 1, **overrides: Any) -> None:
        for service in SERVICE_MODULES:
            if service != NODE_SERVICE:
                self.start(service, **overrides)
        for i in range(nodes):
            self.start(NODE_SERVICE, f"node{i + 1}", **overrides)

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


class MakeRun:
    """`python -m services.devstack run`, the command behind `make run`, as a test process.

    With `embedded` it starts its own servers on the given ports, as for a new user; else it
    uses the servers of `settings`.
    """

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        embedded: dict[str, int] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.embedded = embedded  # e.g. {"nats_port": ..., "mongo_port": ...}
        self.extra_env = dict(extra_env or {})  # e.g. {"WA_TENANTS": "acme"}
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**settings_env(self.settings), **self.extra_env}
        if self.embedded is not None:
            del env["WA_NATS_URL"], env["WA_MONGO_URL"]
            env.update({f"WA_DEV_{name.upper()}": str(value) for name, value in self.embedded.items()})
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "services.devstack", "run"],
            cwd=REPO_ROOT,
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

    def processes(self) -> set[int]:
        """`make run` and every process it started, servers included (their own sessions)."""
        assert self.popen is not None
        return {self.popen.pid} | descendants(self.popen.pid)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` in the process tree (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (2nd field) may hold spaces; the parent pid follows its ")".
            after_name = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        children.setdefault(int(after_name[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found
