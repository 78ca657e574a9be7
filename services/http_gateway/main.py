"""Wiring of the http-gateway service: `python -m services.http_gateway`.

Waits for NATS and MongoDB, makes sure the topology exists, then serves the HTTP API
(app.py) with uvicorn on `http_host:http_port`. With the app's lifespan start and stop the
broker (it answers the `<prefix>.webhook.*` requests) and this replica's webhook
deliverers (webhooks/fleet.py). Metrics are served on `metrics_port`, apart from the API.
Stateless: any number of replicas share the subscriptions' consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from services.api_keys.store import ApiKeyStore
from services.common import mongo
from services.common.bus import ensure_topology
from services.common.config import Settings
from services.common.metrics import sample_every, serve_metrics
from services.common.runtime import make_broker, run_http_service, wait_for_servers
from services.common.tasks import cancel_and_wait
from services.http_gateway.app import create_app
from services.http_gateway.webhooks import admin
from services.http_gateway.webhooks.consumers import Consumers
from services.http_gateway.webhooks.fleet import Fleet
from services.http_gateway.webhooks.lifecycle import Subscriptions
from services.http_gateway.webhooks.policy import DeliveryPolicy
from services.http_gateway.webhooks.store import SubscriptionStore

SERVICE = "http-gateway"
# Requests still running this long after SIGTERM are cut.
SHUTDOWN_GRACE = 5


async def serve(settings: Settings) -> None:
    await wait_for_servers(settings)
    broker = make_broker(settings, SERVICE)
    nc = await broker.connect()
    js = nc.jetstream()
    await ensure_topology(js, settings)
    mongo_client, db = mongo.connect(settings, SERVICE)
    subjects = settings.subjects
    policy = DeliveryPolicy.from_settings(settings)
    store = SubscriptionStore(db)
    subscriptions = Subscriptions(
        store, Consumers(js, subjects, policy.ack_wait), js, subjects, settings.webhook_private_urls
    )
    broker.include_router(admin.build_router(subscriptions, subjects))
    fleet = Fleet(subscriptions, js, subjects, policy, settings.webhook_sync_interval)
    serve_metrics(settings, SERVICE)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        await fleet.start()
        sampler = asyncio.create_task(sample_every(settings.metrics_interval, fleet.sample_backlog, "webhook backlog"))
        try:
            yield
        finally:
            await cancel_and_wait(sampler)
            await fleet.stop()
            await broker.stop()

    config = uvicorn.Config(
        create_app(subjects, settings.tenant, nc, ApiKeyStore(db), lifespan),
        host=settings.http_host,
        port=settings.http_port,
        lifespan="on",
        log_config=None,  # keep the structlog setup
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await mongo.close(mongo_client)


def main() -> None:
    run_http_service(SERVICE, serve)
