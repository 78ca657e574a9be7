"""What every service does at start: wait for NATS and MongoDB, build its broker."""

from __future__ import annotations

import logging

import nats
import structlog
from fast_depends.msgspec import MsgSpecSerializer
from faststream.nats import NatsBroker
from pymongo import AsyncMongoClient
from tenacity import before_sleep_log, retry, stop_after_delay, wait_exponential

from services.common.config import Settings

log = structlog.get_logger(__name__)

# How long a service keeps waiting for its servers at start (e.g. `make run` starting them).
STARTUP_PATIENCE = 120


@retry(
    wait=wait_exponential(multiplier=0.2, max=3),
    stop=stop_after_delay(STARTUP_PATIENCE),
    before_sleep=before_sleep_log(logging.getLogger("startup"), logging.WARNING),
    reraise=True,
)
async def wait_for_servers(settings: Settings, mongo: bool = True) -> None:
    nc = await nats.connect(settings.nats_url, connect_timeout=2, max_reconnect_attempts=0)
    await nc.close()
    if mongo:
        client: AsyncMongoClient = AsyncMongoClient(settings.mongo_url, serverSelectionTimeoutMS=2000)
        try:
            await client.admin.command("ping")
        finally:
            await client.close()


def make_broker(settings: Settings, service: str) -> NatsBroker:
    return NatsBroker(
        settings.nats_url,
        name=service,
        serializer=MsgSpecSerializer(),
        # Per-message "Received/Processed" lines are debug material.
        log_level=logging.DEBUG,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
    )
