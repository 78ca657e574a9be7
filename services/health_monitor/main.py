"""Wiring of the health-monitor service: `python -m services.health_monitor`.

Waits for NATS and MongoDB, makes sure the topology exists, then serves one FastAPI app
with uvicorn: the JSON endpoints (api.py), the dashboard (dashboard.py) and its static
files. The broker's subscribers and the monitor start and stop with the app's lifespan,
and uvicorn turns SIGTERM/SIGINT into a clean shutdown of both.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker
from nats.js.api import DeliverPolicy
from prometheus_client import REGISTRY

from services.common import mongo
from services.common.bus import ensure_topology
from services.common.config import Settings
from services.common.runtime import make_broker, run_http_service, wait_for_servers
from services.health_monitor import api, dashboard
from services.health_monitor.auth import Gate
from services.health_monitor.changes import Changes
from services.health_monitor.metrics import ClusterMetrics
from services.health_monitor.monitor import HealthMonitor

SERVICE = "health-monitor"
# Requests still running this long after SIGTERM are cut.
SHUTDOWN_GRACE = 5


class Server(uvicorn.Server):
    """uvicorn, ending the dashboard's live streams as its shutdown begins: it waits for open
    responses to finish, and a live stream does not finish by itself."""

    def __init__(self, config: uvicorn.Config, changes: Changes) -> None:
        super().__init__(config)
        self._changes = changes

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._changes.close()
        await super().shutdown(sockets)


def subscribe(broker: NatsBroker, settings: Settings, monitor: HealthMonitor) -> None:
    subjects = settings.subjects
    broker.subscriber(subjects.heartbeats_all)(monitor.on_heartbeat)
    # The latest status of every session at once, then every new one. An ordered consumer
    # is ephemeral and acknowledges nothing (the server's ack policy is none): MANUAL keeps
    # FastStream from sending acks nobody waits for.
    broker.subscriber(
        subjects.event("*", "status"),
        stream=JStream(subjects.events_stream, declare=False),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.MANUAL,
    )(monitor.on_status)


def asgi_app(broker: NatsBroker, monitor: HealthMonitor, settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await monitor.start()
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()
            await monitor.stop()

    app = FastAPI(lifespan=lifespan, openapi_url=None)  # api.py documents the endpoints
    gate = Gate(settings.dashboard_token)
    app.include_router(api.router(monitor, gate))
    app.include_router(dashboard.router(monitor, gate))
    app.mount("/static", StaticFiles(directory=dashboard.STATIC), name="static")
    return app


async def serve(settings: Settings) -> None:
    await wait_for_servers(settings)
    broker = make_broker(settings, SERVICE)
    nc = await broker.connect()
    await ensure_topology(nc.jetstream(), settings)
    mongo_client, db = mongo.connect(settings, SERVICE)
    monitor = HealthMonitor(settings, nc, db)
    subscribe(broker, settings, monitor)
    REGISTRY.register(ClusterMetrics(monitor.view))
    config = uvicorn.Config(
        asgi_app(broker, monitor, settings),
        host=settings.health_host,
        port=settings.health_port,
        lifespan="on",
        log_config=None,  # keep the structlog setup
        access_log=False,  # probes every few seconds are noise
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    try:
        await Server(config, monitor.changes).serve()
    finally:
        await mongo.close(mongo_client)


def main() -> None:
    run_http_service(SERVICE, serve)
