"""outbound-queue: owns the policy and bookkeeping of sends (intake, de-duplication, queueing).

Wiring only; the intake rules live in intake.py. The owning session actor executes sends
(services/session_actor/outbound.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from faststream import FastStream, Path
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from pymongo import ASCENDING

from contracts.envelope import Ok
from contracts.sending import SendAccepted, SendText
from services.common import logs, mongo
from services.common.api import request_router, strict
from services.common.bus import ensure_topology
from services.common.cluster import ClusterWatcher
from services.common.config import Settings
from services.common.runtime import make_broker, wait_for_servers
from services.outbound_queue.intake import Intake

WORKERS = 256


async def follow_states(js: JetStreamContext, settings: Settings, states: dict[str, str]) -> None:
    """Keep the latest public state of every session (status events, last one per session first)."""

    async def on_status(msg: Any) -> None:
        body = msgspec.json.decode(msg.data)
        if body.get("state") == "deleted":
            states.pop(body["session_id"], None)
        else:
            states[body["session_id"]] = body.get("state", "")

    await js.subscribe(
        settings.subjects.event("*", "status"),
        cb=on_status,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )


async def serve(settings: Settings) -> None:
    await wait_for_servers(settings)
    broker = make_broker(settings, "outbound-queue")
    await broker.connect()
    js = broker.connection.jetstream()
    await ensure_topology(js, settings)
    mongo_client, db = mongo.connect(settings, "outbound-queue")
    outbound = db["outbound"]
    await outbound.create_index([("session_id", ASCENDING), ("message_id", ASCENDING)])
    await outbound.create_index(
        [("created_at", ASCENDING)], expireAfterSeconds=int(settings.outbound_retention_days * 86400)
    )
    cluster = ClusterWatcher(js, settings)
    await cluster.start()
    states: dict[str, str] = {}
    await follow_states(js, settings, states)
    intake = Intake(settings, js, outbound, cluster.view, states)

    router = request_router(on_unanswered=intake.report_unanswered)

    @router.subscriber(
        settings.subjects.send("{sid}"), queue="outbound-queue", decoder=strict(SendText), max_workers=WORKERS
    )
    async def send(req: SendText, sid: str = Path()) -> Ok[SendAccepted]:
        return await intake.accept(sid, req)

    broker.include_router(router)
    app = FastStream(broker)

    @app.on_shutdown
    async def stop() -> None:
        await cluster.stop()
        await mongo_client.close()

    await app.run()


def main() -> None:
    settings = Settings()
    logs.setup("outbound-queue", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
