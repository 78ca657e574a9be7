"""Memory and threads per idle neonize client, with many clients in one process.

    .venv/bin/python -m bench.neonize_idle --clients 200

Every client takes the adapter's real path for a linked session: its store (a whatsmeow
store with a hand-made device row, since pairing needs a phone) is written first, then the
client connects. Offline the dial fails, so an "idle client" here is what stays after that:
the adapter object, the Go side's loaded device and the store handle neonize keeps per
connection attempt. A connected client adds a websocket, whatsmeow's goroutines and one
parked thread for Neonize(), which cannot be measured without WhatsApp.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.config import Settings
from services.common.logs import setup
from services.devstack.neonize_stores import forge_linked_store, fresh_store
from services.session_actor import machine as m
from services.session_actor.adapters.base import ClientEvent
from services.session_actor.adapters.neonize.client import NeonizeClient
from services.session_actor.adapters.neonize.factory import NeonizeClientFactory

GOAL_BYTES_PER_CLIENT = 2 * 1024 * 1024


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass(frozen=True)
class Cost:
    what: str
    clients: int
    rss_bytes: int
    threads: int
    fds: int
    seconds: float

    @property
    def rss_per_client(self) -> float:
        return self.rss_bytes / self.clients

    @staticmethod
    def header() -> str:
        return (
            "| measured | clients | RSS delta | RSS/client | threads delta | fds delta | wall time |\n"
            "|---|---|---|---|---|---|---|"
        )

    def row(self) -> str:
        return (
            f"| {self.what} | {self.clients} | {self.rss_bytes / 2**20:.1f} MB"
            f" | {self.rss_per_client / 1024:.0f} KB | {self.threads:+d} | {self.fds:+d} | {self.seconds:.1f} s |"
        )


class _Probe:
    """Snapshots process resources; `since()` gives the change as a Cost."""

    def __init__(self) -> None:
        gc.collect()
        self.rss, self.threads, self.fds, self.at = _rss_bytes(), _threads(), _fds(), time.monotonic()

    def since(self, what: str, clients: int, seconds: float) -> Cost:
        gc.collect()
        return Cost(
            what, clients, _rss_bytes() - self.rss, _threads() - self.threads, _fds() - self.fds, seconds
        )


async def measure(clients: int, directory: Path) -> list[Cost]:
    """Idle clients after their first attempt, then what one more attempt each adds."""
    factory = NeonizeClientFactory(Settings(node_capacity=clients), check_reachability=False)
    await factory.start()
    linked = forge_linked_store(await fresh_store(factory, directory))
    for i in range(clients):
        (directory / f"s{i}.db").write_bytes(linked)
    disconnects = asyncio.Queue[None]()

    def on_event(event: ClientEvent) -> None:
        if isinstance(event, m.Disconnected):
            disconnects.put_nowait(None)

    async def attempt_all(idle: list[NeonizeClient]) -> float:
        started = time.monotonic()
        await asyncio.gather(*(client.connect() for client in idle))
        for _ in idle:
            await disconnects.get()
        seconds = time.monotonic() - started
        await asyncio.sleep(1.0)  # the Go clients' background stops finish
        return seconds

    await asyncio.sleep(0.5)  # the template's stop settles before the baseline
    baseline = _Probe()
    idle = [factory.create(f"s{i}", directory / f"s{i}.db", on_event, time.monotonic) for i in range(clients)]
    first = baseline.since("idle clients (one attempt each)", clients, await attempt_all(idle))
    again = _Probe()
    extra = again.since("each further attempt", clients, await attempt_all(idle))
    await asyncio.gather(*(client.close() for client in idle))
    await factory.stop()
    return [first, extra]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args(argv)
    setup("bench", "WARNING")
    with tempfile.TemporaryDirectory(prefix="neonize-idle-") as tmp:
        costs = asyncio.run(measure(args.clients, Path(tmp)))
    print(Cost.header())
    for cost in costs:
        print(cost.row())
    per_client = costs[0].rss_per_client
    verdict = "met" if per_client < GOAL_BYTES_PER_CLIENT else "MISSED"
    print(
        f"goal < {GOAL_BYTES_PER_CLIENT // 2**20} MB per idle client: {verdict} ({per_client / 1024:.0f} KB)"
    )


if __name__ == "__main__":
    main()
