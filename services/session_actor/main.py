"""session-actor: a node that hosts session actors and answers the session API.

Wiring only: builds what the node talks to (NATS, MongoDB, the WhatsApp client library)
and hands it in. The decisions live in machine.py (connection states), lease.py (when a
node may act), placement.py (which sessions a node takes or gives away) and
services/sending/policy.py (pacing, retries); node.py supervises the parts that run them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from faststream import FastStream
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from prometheus_client import REGISTRY
from pymongo.asynchronous.database import AsyncDatabase

from services.common import logs, mongo
from services.common.bus import EventPublisher, ensure_topology
from services.common.cluster import ClusterWatcher
from services.common.config import Settings
from services.common.connection import Reconnections
from services.common.media import MediaLimits
from services.common.metrics import serve_metrics
from services.common.runtime import exit_with_supervisor, make_broker, wait_for_servers
from services.common.sessions import SessionStore
from services.credentials import importer
from services.credentials.vault import CredentialVault, Keyring
from services.sending.journal import SendJournal
from services.sending.ledger import Ledger
from services.sending.policy import RetryPolicy, default_pacing
from services.session_actor.adapters import make_factory
from services.session_actor.api import SessionApi, build_router
from services.session_actor.inbound import InboundKit
from services.session_actor.inbound_media import InboundMediaPolicy
from services.session_actor.machine import ReconnectPolicy
from services.session_actor.media_store import MediaStore
from services.session_actor.metrics import SessionStates
from services.session_actor.node import ImportAtStartup, Node
from services.session_actor.outbound import SendingKit
from services.session_actor.send_queue import SendQueues


def reconnect_policy(settings: Settings) -> ReconnectPolicy:
    return ReconnectPolicy(
        base=settings.backoff_base,
        cap=settings.backoff_cap,
        flap_disconnects=settings.flap_disconnects,
        flap_window=settings.flap_window,
        flap_floor=settings.flap_backoff_floor,
        pairing_timeout=settings.pairing_timeout,
    )


async def sending_kit(
    settings: Settings, js: JetStreamContext, queues: SendQueues, reconnections: Reconnections
) -> SendingKit:
    journal = SendJournal(await js.key_value(settings.subjects.sends_bucket))
    return SendingKit(
        ledger=Ledger(js, settings.subjects, journal),
        queues=queues,
        reconnections=reconnections,
        retry=RetryPolicy(settings.send_max_attempts, settings.send_retry_base, settings.send_retry_cap),
        default_pacing=default_pacing(settings),
        media_limits=MediaLimits.from_settings(settings),
        media_concurrency=settings.media_concurrency,
    )


async def inbound_kit(settings: Settings, js: JetStreamContext) -> InboundKit:
    return InboundKit(
        files=MediaStore(await js.object_store(settings.subjects.media_bucket)),
        policy=InboundMediaPolicy.from_settings(settings),
        slots=asyncio.Semaphore(settings.inbound_media_concurrency),
    )


def startup_import(
    settings: Settings,
    db: AsyncDatabase,
    sessions: SessionStore,
    vault: CredentialVault,
    kv: KeyValue,
    events: EventPublisher,
) -> ImportAtStartup | None:
    """The import of WA_IMPORT_DIR a node runs as it starts, if that is set."""
    directory = settings.import_dir
    if directory is None:
        return None

    async def run(node_id: str) -> None:
        registry = importer.Registry(sessions, vault, kv, events, db[importer.LEDGER], node_id)
        await importer.import_at_startup(directory, registry)

    return run


@dataclass(frozen=True)
class Assembly:
    node: Node
    api: SessionApi


async def assemble(
    settings: Settings,
    nc: NatsClient,
    db: AsyncDatabase,
    keyring: Keyring,
    reconnections: Reconnections | None = None,
) -> Assembly:
    """A node and its session API, on a NATS connection and a database (the leases bucket
    is watched from here on; the node is not started). `reconnections` come from the
    connection's reconnected callback."""
    reconnections = reconnections or Reconnections()
    js = nc.jetstream()
    sessions = SessionStore(db)
    await sessions.ensure_indexes()
    clients = make_factory(settings, nc)
    vault = CredentialVault(db, keyring, clients.device_table)
    events = EventPublisher(js, settings.subjects)
    cluster = ClusterWatcher(js, settings)
    await cluster.start()
    assert cluster.kv is not None
    queues = SendQueues(js, settings.subjects)
    node = Node(
        settings,
        nc=nc,
        js=js,
        kv=cluster.kv,
        cluster=cluster,
        clients=clients,
        sessions=sessions,
        vault=vault,
        events=events,
        sending=await sending_kit(settings, js, queues, reconnections),
        inbound=await inbound_kit(settings, js),
        reconnect_policy=reconnect_policy(settings),
        import_at_startup=startup_import(settings, db, sessions, vault, cluster.kv, events),
    )
    api = SessionApi(
        nc=nc,
        subjects=settings.subjects,
        sessions=sessions,
        vault=vault,
        kv=cluster.kv,
        view=cluster.view,
        events=events,
        queues=queues,
        default_pacing=default_pacing(settings),
        move_patience=settings.lease_ttl * 2 + 2,
        view_current=node.lease.may_act,
    )
    return Assembly(node, api)


async def serve(settings: Settings) -> None:
    keyring = Keyring.load(settings.vault_keys.get_secret_value(), settings.vault_key_file, settings.data_dir)
    await wait_for_servers(settings)
    reconnections = Reconnections()
    broker = make_broker(settings, f"session-actor/{settings.node_name}", reconnections)
    await broker.connect()
    await ensure_topology(broker.connection.jetstream(), settings)
    mongo_client, db = mongo.connect(settings, "session-actor")
    parts = await assemble(settings, broker.connection, db, keyring, reconnections)
    REGISTRY.register(SessionStates(lambda: [actor.state for actor in parts.node.actors]))
    serve_metrics(settings, "session-actor")
    await parts.node.start()
    broker.include_router(build_router(parts.api, settings))
    app = FastStream(broker)

    @app.on_shutdown
    async def stop_node() -> None:
        await parts.node.shutdown()
        await mongo.close(mongo_client)

    await app.run()


def main() -> None:
    settings = Settings()
    logs.setup("session-actor", settings.log_level, settings.log_format)
    exit_with_supervisor(settings)
    asyncio.run(serve(settings))
