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

from contracts.envelope import Ok
from contracts.sending import SendAccepted, SendText
from services.common import logs
from services.common.api import request_router, strict
from services.common.bus import ensure_topology
from services.common.cluster import ClusterWatcher
from services.common.config import Settings
from services.common.runtime import make_broker, wait_for_servers
from services.common.sends import SendJournal
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
    await wait_for_servers(settings, mongo=False)
    broker = make_broker(settings, "outbound-queue")
    await broker.connect()
    js = broker.connection.jetstream()
    await ensure_topology(js, settings)
    cluster = ClusterWatcher(js, settings)
    await cluster.start()
    states: dict[str, str] = {}
    await follow_states(js, settings, states)
    journal = SendJournal(await js.key_value(settings.subjects.sends_bucket))
    intake = Intake(settings, js, journal, cluster.view, states)

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

    await app.run()


def main() -> None:
    settings = Settings()
    logs.setup("outbound-queue", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
