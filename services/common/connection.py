"""How every client of ours reaches NATS: one place for the connection options (seed
servers), so services, wactl and the harness connect alike. Light to import: wactl
starts with it."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from services.common.config import Settings


def connection_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for nats-py's connect: the seed servers (any one that answers)."""
    return {"servers": settings.nats_servers}


async def connect_nats(settings: Settings, **options: Any) -> NatsClient:
    return await nats.connect(**connection_options(settings), **options)
