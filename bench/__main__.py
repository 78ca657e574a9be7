"""`make bench`: every benchmark, or one by name. Results go to bench-results/*.json."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import typer

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def send(sessions: int = 20, messages: int = 3000, in_flight: int = 64) -> None:
    """Send throughput and latency against raw JetStream publish+consume."""
    from bench import send as bench_send

    asyncio.run(bench_send.run(sessions, messages, in_flight))


@app.command()
def failover(
    sessions: int = 1000, nodes: int = 3, small: int = 100, window: float = 30.0, pair_concurrency: int = 64
) -> None:
    """Crash failover, graceful handoff, cold restore, lease/heartbeat write rates (issue #3)."""
    from bench import failover as bench_failover

    asyncio.run(bench_failover.run(sessions, nodes, small, window, pair_concurrency))


@app.command()
def devdb(sessions: int = 334) -> None:
    """What a moved session costs the dev database, through the real stores (issue #3's handoff)."""
    from bench import devdb as bench_devdb

    asyncio.run(bench_devdb.run(sessions))


@app.command()
def stops(sessions: int = 600, rounds: int = 30) -> None:
    """Graceful stops over and over: every node must exit on SIGTERM (issue #3)."""
    from bench import stops as bench_stops

    asyncio.run(bench_stops.run(sessions, rounds))


@app.command()
def vault(saves: int = 200, sessions: int = 20) -> None:
    """Credential vault per session: snapshot, seal, fenced write, restore (neonize and sim stores)."""
    from bench import vault as bench_vault

    asyncio.run(bench_vault.run(saves, sessions))


@app.command()
def media(sessions: int = 2, small: int = 200, large: int = 20) -> None:
    """Inbound media into the media bucket (100 KB and 5 MB images) next to raw object-store puts."""
    from bench import media as bench_media

    asyncio.run(bench_media.run(sessions, small, large))


@app.command()
def webhooks(events: int = 2000, subscriptions: int = 4, rate: float = 100.0) -> None:
    """Webhook deliveries to a local receiver next to raw JetStream consumption of the same events."""
    from bench import webhooks as bench_webhooks

    asyncio.run(bench_webhooks.run(events, subscriptions, rate))


@app.command()
def pacing(sessions: int = 4, sends: int = 25) -> None:
    """Default pacing at WhatsApp: never faster than the bucket, gaps with the configured jitter."""
    from bench import pacing as bench_pacing

    asyncio.run(bench_pacing.run(sessions, sends))


@app.command(name="neonize-idle")
def neonize_idle(clients: int = 200) -> None:
    """Memory and threads per idle neonize client, many clients in one process (own process)."""
    # neonize sizes its executor and logging at import: it gets a fresh interpreter.
    subprocess.run([sys.executable, "-m", "bench.neonize_idle", "--clients", str(clients)], check=True)


@app.command(name="chaos")
def chaos_run(sessions: int = 200, sends: int = 10_000, nodes: int = 3, kill_every: float = 5.0) -> None:
    """Sends while nodes are killed (SIGKILL) and restarted; checks every send's outcome."""
    from bench import chaos as bench_chaos

    asyncio.run(bench_chaos.run(sessions, sends, nodes, kill_every))


@app.command()
def cluster(sessions: int = 20, sends: int = 4000, every: float = 10.0, down_for: float = 5.0) -> None:
    """NATS servers of a 3-server cluster killed (disk wiped) while sessions send."""
    from bench import cluster as bench_cluster

    asyncio.run(bench_cluster.run(sessions, sends, every, down_for))


@app.command()
def cpu(
    sessions: int = 100,
    sends: int = 3000,
    in_flight: int = 128,
    idle: float = 20.0,
    baseline: str = typer.Option(None, help="a git revision to measure first, side by side"),
) -> None:
    """CPU per send of every process next to raw JetStream, and per idle session."""
    from bench import cpu as bench_cpu

    asyncio.run(bench_cpu.run(sessions, sends, in_flight, idle, baseline))


@app.command()
def scale(sessions: int = 10_000, idle: float = 60.0, concurrency: int = 16) -> None:
    """Many sessions on one node: pairing, idle CPU and memory, that node's crash (issue #15)."""
    from bench import scale as bench_scale

    asyncio.run(bench_scale.run(sessions, idle, concurrency))


@app.command()
def fuzz(per_subject: int = 2000, seed: int = 0) -> None:
    """Every public request subject fuzzed with generated bodies and hostile subjects (issue #16)."""
    from bench import fuzz as bench_fuzz

    asyncio.run(bench_fuzz.run(per_subject, seed))


@app.command(name="all")
def run_all() -> None:
    """Every benchmark with its default parameters."""
    send()
    media()
    webhooks()
    pacing()
    failover()
    devdb()
    stops()
    vault()
    neonize_idle()
    cluster()
    cpu(baseline=None)  # a typer.Option default is not None when called from Python
    scale()
    fuzz()


if __name__ == "__main__":
    app()
