"""`make bench`: every benchmark, or one by name. Results go to bench-results/*.json."""

from __future__ import annotations

import asyncio

import typer

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def send(sessions: int = 20, messages: int = 3000, in_flight: int = 64) -> None:
    """Send throughput and latency against raw JetStream publish+consume."""
    from bench import send as bench_send

    asyncio.run(bench_send.run(sessions, messages, in_flight))


@app.command(name="all")
def run_all() -> None:
    """Every benchmark with its default parameters."""
    send()


if __name__ == "__main__":
    app()
