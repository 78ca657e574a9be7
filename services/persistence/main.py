"""persistence: stores every public event in MongoDB and answers the history queries.

Wiring only; consuming and writing events is in writer.py, the history queries in queries.py.
"""

from __future__ import annotations

import asyncio
import functools

import structlog
from faststream import FastStream
from faststream.nats import NatsBroker
from pymongo.asynchronous.database import AsyncDatabase

from services.common import logs, mongo
from services.common.bus import ensure_topology
from services.common.config import Settings
from services.common.metrics import sample_every, serve_metrics
from services.common.runtime import exit_with_supervisor, make_broker, wait_for_servers
from services.common.tasks import cancel_and_wait
from services.persistence import metrics
from services.persistence.queries import HistoryQueries, build_router
from services.persistence.writer import DURABLE, EventConsumer, EventWriter

log = structlog.get_logger(__name__)


def build_broker(settings: Settings, db: AsyncDatabase) -> NatsBroker:
    broker = make_broker(settings, "persistence")
    broker.include_router(build_router(HistoryQueries(db), settings.subjects))
    return broker


async def serve(settings: Settings) -> None:
    await wait_for_servers(settings)
    mongo_client, db = mongo.connect(settings, "persistence")
    writer = EventWriter(db, settings.outbound_retention_days)
    await writer.ensure_indexes()
    broker = build_broker(settings, db)
    await broker.connect()
    js = broker.connection.jetstream()
    await ensure_topology(js, settings)
    consumer = EventConsumer(js, settings.subjects, writer)
    app = FastStream(broker)
    serve_metrics(settings, "persistence")
    backlog = functools.partial(metrics.sample_backlog, js, settings.subjects, DURABLE)
    sampler: asyncio.Task[None] | None = None

    @app.after_startup
    async def start_consuming() -> None:
        nonlocal sampler
        await consumer.start()
        sampler = asyncio.create_task(sample_every(settings.metrics_interval, backlog, "persistence backlog"))
        log.info(
            "persistence ready", stream=settings.subjects.events_stream, durable=DURABLE, db=settings.mongo_db
        )

    @app.on_shutdown
    async def stop_consuming() -> None:
        await cancel_and_wait(sampler)
        await consumer.stop()  # while NATS is still connected: the last batch gets acked

    @app.after_shutdown
    async def close_mongo() -> None:
        await mongo.close(mongo_client)

    await app.run()


def main() -> None:
    settings = Settings()
    logs.setup("persistence", settings.log_level, settings.log_format)
    exit_with_supervisor(settings)
    asyncio.run(serve(settings))
