"""A session-actor node: the supervisor of the parts that run this node's sessions.

- `lease` (lease_keeper.py): the node lease `node.<id>`, renewed, and taken again under a
  new identity when lost; while it is not valid no actor acts.
- `ownership` (ownership.py): placement rounds, claims and releases of `own.<sid>`.
- `actors` (actors.py): one SessionActor per owned session, each built on an ActorHost
  (host.py) that holds exactly what an actor uses of its node.
- store files (store_files.py) and heartbeats (heartbeats.py).

The node wires them together and owns the order of starting and stopping; everything it
talks to (NATS, the stores, the client library) is handed in by main.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from contracts.internal import NodeHeartbeat
from contracts.types import utcnow
from services.common.bus import EventPublisher
from services.common.cluster import ClusterWatcher, fence_token
from services.common.config import Settings
from services.common.pacing import TokenBucket
from services.common.sessions import SessionStore
from services.common.tasks import TaskSet, cancel_and_wait
from services.credentials.vault import CredentialVault
from services.session_actor.actor import SessionActor
from services.session_actor.actors import ActorRegistry
from services.session_actor.adapters.base import ClientFactory
from services.session_actor.commands import CommandListener
from services.session_actor.heartbeats import send_heartbeats
from services.session_actor.host import ActorHost
from services.session_actor.inbound import InboundKit
from services.session_actor.lease_keeper import LeaseKeeper
from services.session_actor.machine import ReconnectPolicy
from services.session_actor.outbound import SendingKit
from services.session_actor.ownership import SessionOwnership
from services.session_actor.pair_limit import PairLimit
from services.session_actor.store_files import StoreFiles

log = structlog.get_logger(__name__)

# A graceful stop hands sessions back within this, or leaves the rest to expire with the lease.
SHUTDOWN_LIMIT = 10.0
DROP_LEASE_TIMEOUT = 2.0
# Imports existing stores at startup, as this node (its id): see services/credentials/importer.py.
ImportAtStartup = Callable[[str], Awaitable[Any]]


class Node:
    def __init__(
        self,
        settings: Settings,
        *,
        nc: NatsClient,
        js: JetStreamContext,
        kv: KeyValue,
        cluster: ClusterWatcher,
        clients: ClientFactory,
        sessions: SessionStore,
        vault: CredentialVault,
        events: EventPublisher,
        sending: SendingKit,
        inbound: InboundKit,
        reconnect_policy: ReconnectPolicy,
        import_at_startup: ImportAtStartup | None = None,
    ) -> None:
        self._settings = settings
        self._nc = nc
        self.cluster = cluster
        self._clients = clients
        self._sessions = sessions
        self._vault = vault
        self._events = events
        self._sending = sending
        self._inbound = inbound
        self._reconnect_policy = reconnect_policy
        self._import_at_startup = import_at_startup
        self._background = TaskSet()  # command replies, pair-code waits
        self._commands = CommandListener(nc, settings.subjects, self._background)
        self._connects = TokenBucket.full(settings.connect_rate, burst=max(1.0, settings.connect_rate / 10))
        self.lease = LeaseKeeper(settings, kv, js)
        self.actors = ActorRegistry(self._make_actor, on_finished=self._actor_finished)
        self.ownership = SessionOwnership(settings, kv, cluster, self.lease, self.actors)
        self.stores = StoreFiles(settings.data_dir / "stores", self.lease.node_id)
        self._host = self._make_host()
        self._loops: list[asyncio.Task[None]] = []

    @property
    def id(self) -> str:
        return self.lease.node_id

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self.stores.prepare()
        problems = await self._vault.key_problems()
        if problems:
            # Its claims would only stop sessions it cannot run: the node stays out of placement.
            log.error(
                "THIS NODE TAKES NO SESSIONS: its vault keys (WA_VAULT_KEYS) cannot open the stored "
                "credentials; restart it with the right keys",
                node=self.id,
                problems=problems,
            )
            self.lease.unfit = "; ".join(problems)
            self.ownership.stop_accepting()
        await self._clients.start(self.lease.may_act)
        if self._import_at_startup is not None:  # before the lease: an import may take a while
            await self._import_at_startup(self.id)
        await self.lease.register()
        await self.ownership.reconcile_catalog(await self._sessions.ids())
        self.cluster.subscribe(lambda kind, key: self.ownership.wake())
        self._loops = [
            asyncio.create_task(self.lease.keep(self), name="lease-renew"),
            asyncio.create_task(self.ownership.run(), name="placement"),
            asyncio.create_task(
                send_heartbeats(
                    self._nc.publish,
                    lambda: self._settings.subjects.heartbeat(self.id),
                    self._heartbeat,
                    self._settings.heartbeat_interval,
                ),
                name="heartbeat",
            ),
        ]
        log.info("node started", node=self.id, capacity=self._settings.node_capacity)

    async def shutdown(self) -> None:
        """Graceful stop: hand every session back at once, announced, then drop the lease.

        Without NATS nothing can be announced: every actor stops at once and the other nodes
        take the sessions over when this node's lease expires, as after a crash. The same
        happens to what is not handed back within SHUTDOWN_LIMIT (NATS gone meanwhile).
        """
        started = time.monotonic()
        self.ownership.stop_accepting()
        released = 0
        if self._nc.is_connected:
            try:
                async with asyncio.timeout(SHUTDOWN_LIMIT):
                    released = await self._hand_everything_back()
            except TimeoutError:
                log.warning("graceful handoff cut short", node=self.id, limit=SHUTDOWN_LIMIT)
        else:
            log.warning("stopping without NATS: the sessions move when this node's lease expires", node=self.id)
        self.actors.abort_all()
        await self.actors.wait_all()
        await cancel_and_wait(*self._loops)
        await self._background.cancel_all()
        if self._nc.is_connected:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(DROP_LEASE_TIMEOUT):
                    await self.lease.drop()
        await self.cluster.stop()
        await self._clients.stop()
        self.stores.remove_all()
        log.info("node stopped", node=self.id, released=released, seconds=round(time.monotonic() - started, 2))

    async def _hand_everything_back(self) -> int:
        """Announced: the lease says `leaving`, then every session is released."""
        self.lease.leaving = True
        with contextlib.suppress(Exception):  # the others then make room for what we release
            await self.lease.renew()
        return await self.ownership.release_all()

    # -- the lease, as the keeper reports it (lease_keeper.LeaseHolder) -----------------------
    def lease_invalid(self) -> None:
        if len(self.actors):
            log.error("lease not renewed in time: stopping every actor", node=self.id, actors=len(self.actors))
            self.actors.abort_all()

    async def lease_lost(self) -> None:
        self.actors.abort_all()
        await self.actors.wait_all()

    def rejoined(self, previous: str) -> None:
        self.stores = StoreFiles(self._settings.data_dir / "stores", self.id)
        self._host = self._make_host()
        self.ownership.wake()

    # -- what actors get ----------------------------------------------------------------------
    def _make_host(self) -> ActorHost:
        return ActorHost(
            node_id=self.id,
            may_act=self.lease.may_act,
            still_owner=self._still_owner,
            connect_slot=self._connect_slot,
            spawn=self._spawn,
            sessions=self._sessions,
            vault=self._vault,
            events=self._events,
            clients=self._clients,
            stores=self.stores,
            commands=self._commands,
            reconnect_policy=self._reconnect_policy,
            sending=self._sending,
            inbound=self._inbound,
            pair_limit=PairLimit(self._settings.pair_rate_limit, self._settings.pair_rate_window),
        )

    def _make_actor(self, sid: str, revision: int) -> SessionActor:
        return SessionActor(self._host, sid, revision, fence_token(self.cluster.epoch_ms, revision))

    def _actor_finished(self, actor: SessionActor) -> None:
        if actor.unusable is not None:
            self.ownership.refuse(actor.sid, actor.revision, actor.unusable)
        self.ownership.wake()

    def _still_owner(self, sid: str, revision: int) -> bool:
        entry = self.cluster.view.sessions.get(sid)
        return self.lease.may_act() and entry is not None and entry.owner.node == self.id and entry.revision == revision

    async def _connect_slot(self) -> None:
        """Waits for this node's next connection slot: restores of many sessions are staggered."""
        delay = self._connects.reserve(time.monotonic())
        if delay:
            await asyncio.sleep(delay)

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> Any:
        return self._background.spawn(work, name=name)

    def _heartbeat(self) -> NodeHeartbeat:
        return NodeHeartbeat(
            node_id=self.id,
            at=utcnow(),
            capacity=self._settings.node_capacity,
            lease_ok=self.lease.may_act(),
            loop_lag_ms=round(self.lease.loop_lag_ms, 1),
            running=len(self.actors),
        )
