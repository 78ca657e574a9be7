"""How every client of ours reaches NATS: one place for the connection options (seed
servers), so services, wactl and the harness connect alike. Light to import: wactl
starts with it."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from services.common.config import Settings


def connection_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for nats-py's connect: the seed servers (any one that answers)."""
    return {"servers": settings.nats_servers}


async def connect_nats(settings: Settings, **options: Any) -> NatsClient:
    return await nats.connect(**connection_options(settings), **options)


class Reconnections:
    """Tells waiters that the connection came back: the server forgets a pull request whose
    client went away, so a long poll issued before must be issued again (nats-py would wait
    for its own timeout). Passed to the broker as its `reconnected_cb`."""

    def __init__(self) -> None:
        self._next = asyncio.Event()

    def next(self) -> asyncio.Event:
        """Set at the next reconnection."""
        return self._next

    async def happened(self) -> None:
        came_back, self._next = self._next, asyncio.Event()
        came_back.set()
