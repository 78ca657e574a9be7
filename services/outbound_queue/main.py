"""outbound-queue: accepts sends and keeps their queues.

Wiring only. Intake (intake.py): validation, idempotency, scheduling, the durable queue.
Upkeep (upkeep.py): expiry on time, failing the queues of logged-out and deleted sessions.
Operations (deadletters.py): queue stats and the dead-letter queue. The rules and the
lifecycle bookkeeping are the shared send package (services/sending/), which the session
actor that executes sends uses too.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import msgspec
import structlog
from faststream import FastStream
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from contracts.envelope import Ok
from contracts.queue import DlqList, DlqListRequest, DlqPurged, DlqRetried, DlqSelect, QueueStats
from contracts.sending import SendAccepted, SendText
from contracts.sessions import Empty
from services.common import logs
from services.common.api import Path, request_router, strict
from services.common.bus import ensure_topology
from services.common.cluster import ClusterWatcher, Token, parse_token
from services.common.config import Settings
from services.common.metrics import sample_every, serve_metrics
from services.common.runtime import exit_with_supervisor, make_broker, wait_for_servers
from services.common.tasks import TaskSet
from services.outbound_queue.deadletters import Operations
from services.outbound_queue.intake import Intake
from services.outbound_queue.metrics import QueueGauges
from services.outbound_queue.upkeep import FAILED_FOR, Upkeep
from services.sending.journal import SendJournal
from services.sending.ledger import Ledger

log = structlog.get_logger(__name__)

QUEUE = "outbound-queue"
WORKERS = 256


class _Status(msgspec.Struct):
    session_id: str
    state: str
    at: datetime
    token: str | None = None


async def follow_states(
    js: JetStreamContext,
    settings: Settings,
    states: dict[str, str],
    upkeep: Upkeep,
    tasks: TaskSet,
    cluster: ClusterWatcher,
) -> None:
    """Keep the latest state of every session (last status event per session first), and fail
    the waiting sends of sessions that are logged out or deleted.

    Only the services may publish events (NATS permissions, see contracts/permissions.py);
    what an event says is still checked: its token must be one a claim produced."""
    decoder = msgspec.json.Decoder(_Status)
    tokens: dict[str, Token] = {}

    async def on_status(msg: Any) -> None:
        try:
            status = decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("status event ignored: not one", subject=msg.subject)
            return
        if status.token is not None:
            token = parse_token(status.token)
            if token is None or not await cluster.claimed(status.session_id, token):
                log.warning("status event ignored: its token is no owner's", session=status.session_id)
                return
            # Fencing applies to events too: a late event of an older owner says nothing now.
            if token < tokens.get(status.session_id, (0, 0)):
                return
            tokens[status.session_id] = token
        if status.state == "deleted":
            states.pop(status.session_id, None)
        else:
            states[status.session_id] = status.state
        if status.state in FAILED_FOR:
            tasks.spawn(upkeep.clear_session(status.session_id, status.state, status.at))

    await js.subscribe(
        settings.subjects.event("*", "status"),
        cb=on_status,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )


def build_router(intake: Intake, operations: Operations, settings: Settings) -> Any:
    s = settings.subjects
    router = request_router(on_unanswered=intake.report_unanswered)

    @router.subscriber(s.send("{sid}"), queue=QUEUE, decoder=strict(SendText), max_workers=WORKERS)
    async def send(req: SendText, sid: str = Path()) -> Ok[SendAccepted]:
        return await intake.accept(sid, req)

    @router.subscriber(s.queue("{sid}", "stats"), queue=QUEUE, decoder=strict(Empty))
    async def queue_stats(req: Empty, sid: str = Path()) -> Ok[QueueStats]:
        return Ok(data=await operations.stats(sid))

    @router.subscriber(s.dlq("list"), queue=QUEUE, decoder=strict(DlqListRequest))
    async def dlq_list(req: DlqListRequest) -> Ok[DlqList]:
        return Ok(data=await operations.list(req))

    @router.subscriber(s.dlq("retry"), queue=QUEUE, decoder=strict(DlqSelect))
    async def dlq_retry(req: DlqSelect) -> Ok[DlqRetried]:
        return Ok(data=await operations.retry(req))

    @router.subscriber(s.dlq("purge"), queue=QUEUE, decoder=strict(DlqSelect))
    async def dlq_purge(req: DlqSelect) -> Ok[DlqPurged]:
        return Ok(data=await operations.purge(req))

    return router


async def serve(settings: Settings) -> None:
    await wait_for_servers(settings, mongo=False)
    broker = make_broker(settings, "outbound-queue")
    await broker.connect()
    js = broker.connection.jetstream()
    await ensure_topology(js, settings)
    cluster = ClusterWatcher(js, settings)
    await cluster.start()
    ledger = Ledger(js, settings.subjects, SendJournal(await js.key_value(settings.subjects.sends_bucket)))
    states: dict[str, str] = {}
    intake = Intake(settings, js, ledger, cluster.view, states, max_payload=broker.connection.max_payload)
    upkeep = Upkeep(js, settings.subjects, ledger)
    tasks = TaskSet()
    await follow_states(js, settings, states, upkeep, tasks, cluster)
    await upkeep.start()
    serve_metrics(settings, "outbound-queue")
    gauges = QueueGauges(js, settings.subjects, settings.metrics_per_session)
    tasks.spawn(sample_every(settings.metrics_interval, gauges.sample, "queues"), name="queue-gauges")
    broker.include_router(build_router(intake, Operations(js, settings.subjects, intake), settings))
    app = FastStream(broker)

    @app.on_shutdown
    async def stop() -> None:
        await upkeep.stop()
        await tasks.cancel_all()
        await cluster.stop()

    await app.run()


def main() -> None:
    settings = Settings()
    logs.setup("outbound-queue", settings.log_level, settings.log_format)
    exit_with_supervisor(settings)
    asyncio.run(serve(settings))
