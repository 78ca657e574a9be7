"""A node's heartbeat: every `interval`, the states of the sessions it runs, for the health
monitor (`<prefix>._hb.<node id>`, core NATS: a lost beat is replaced by the next one)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from contracts.internal import NodeHeartbeat
from services.common.bus import encode

Publish = Callable[[str, bytes], Awaitable[None]]


async def send_heartbeats(
    publish: Publish, subject: Callable[[], str], describe: Callable[[], NodeHeartbeat], interval: float
) -> None:
    """Runs until cancelled; `subject` and `describe` are asked anew for each beat (the node's
    identity changes when it rejoins after losing its lease)."""
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            await publish(subject(), encode(describe()))
