"""Wiring of the health-monitor service: `python -m services.health_monitor`.

Waits for NATS and MongoDB, makes sure the topology exists, then serves one ASGI app
(FastStream's AsgiFastStream) with uvicorn: broker subscribers and HTTP endpoints share its
lifecycle, and uvicorn turns SIGTERM/SIGINT into a clean shutdown of both.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvicorn
from faststream import AckPolicy
from faststream.asgi import AsgiFastStream
from faststream.asgi.types import ASGIApp
from faststream.nats import JStream, NatsBroker
from nats.js.api import DeliverPolicy

from services.common import logs, mongo
from services.common.bus import ensure_topology
from services.common.config import Settings
from services.common.runtime import exit_with_supervisor, make_broker, wait_for_servers
from services.health_monitor import http
from services.health_monitor.monitor import HealthMonitor

SERVICE = "health-monitor"


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


def asgi_app(broker: NatsBroker, monitor: HealthMonitor) -> ASGIApp:
    app = AsgiFastStream(
        broker,
        asgi_routes=http.routes(monitor),
        on_startup=[monitor.start],
        on_shutdown=[monitor.stop],
    )
    return http.SessionPaths(app, monitor)


async def serve(settings: Settings) -> None:
    await wait_for_servers(settings)
    broker = make_broker(settings, SERVICE)
    nc = await broker.connect()
    await ensure_topology(nc.jetstream(), settings)
    mongo_client, db = mongo.connect(settings, SERVICE)
    monitor = HealthMonitor(settings, nc, db)
    subscribe(broker, settings, monitor)
    config = uvicorn.Config(
        asgi_app(broker, monitor),
        host=settings.health_host,
        port=settings.health_port,
        lifespan="on",
        log_config=None,  # keep the structlog setup
        access_log=False,  # probes every few seconds are noise
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await mongo.close(mongo_client)


def main() -> None:
    settings = Settings()
    logs.setup(SERVICE, settings.log_level, settings.log_format)
    exit_with_supervisor(settings)
    # SIGTERM unwinds like Ctrl-C, at any point: uvicorn shuts the app down gracefully and then
    # re-raises the signal it caught, which lands here as KeyboardInterrupt after the cleanup.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
