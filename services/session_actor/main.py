"""session-actor: a node that hosts session actors and answers the session API.

Wiring only; the decisions live in machine.py (connection states), lease.py (when a node
may act), placement.py (which sessions a node takes or gives away), node.py and actor.py.
"""

from __future__ import annotations

import asyncio

from faststream import FastStream

from services.common import logs, mongo
from services.common.bus import ensure_topology
from services.common.config import Settings
from services.common.runtime import make_broker, wait_for_servers
from services.common.sessions import SessionStore
from services.credentials.vault import Keyring
from services.session_actor.adapters import make_factory
from services.session_actor.api import SessionApi, build_router
from services.session_actor.node import Node


async def serve(settings: Settings) -> None:
    keyring = Keyring.load(settings.vault_keys.get_secret_value(), settings.vault_key_file, settings.data_dir)
    await wait_for_servers(settings)
    broker = make_broker(settings, f"session-actor/{settings.node_name}")
    await broker.connect()
    nc = broker.connection
    await ensure_topology(nc.jetstream(), settings)
    mongo_client, db = mongo.connect(settings, "session-actor")
    await SessionStore(db).ensure_indexes()
    node = Node(settings, nc, db, make_factory(settings, nc), keyring)
    await node.start()
    broker.include_router(build_router(SessionApi(node), settings))
    app = FastStream(broker)

    @app.on_shutdown
    async def stop_node() -> None:
        await node.shutdown()
        await mongo_client.close()

    await app.run()


def main() -> None:
    settings = Settings()
    logs.setup("session-actor", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
