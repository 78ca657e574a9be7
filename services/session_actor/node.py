"""A session-actor node: holds a lease, claims its fair share of sessions, runs their actors.

The node is the only place that talks to the leases bucket on behalf of actors:

- one node lease (`node.<id>`), renewed every `lease_renew_interval`; when it cannot renew
  for `lease_self_stop` it aborts every actor, before the server can expire the lease and
  let another node take over (see lease.py);
- claims and releases of `own.<sid>` by compare-and-set; the revision a claim produced is
  the actor's fencing token;
- a placement loop (placement.py) woken by every change in the bucket and by a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import ContractError, Err, ErrorBody, Ok
from contracts.internal import NodeHeartbeat, NodeLease, Ownership, SessionBeat
from contracts.types import utcnow
from services.common.bus import EventPublisher, encode
from services.common.cluster import NODE, OWN, ClusterWatcher, fence_token
from services.common.config import Settings
from services.common.pacing import TokenBucket
from services.common.sessions import SessionStore
from services.common.tasks import TaskSet, cancel_and_wait, wait_event
from services.credentials import importer
from services.credentials.vault import CredentialVault, Keyring
from services.sending.journal import SendJournal
from services.sending.ledger import Ledger
from services.sending.policy import RetryPolicy, default_pacing
from services.session_actor import placement
from services.session_actor.actor import SessionActor
from services.session_actor.adapters.base import ClientFactory
from services.session_actor.lease import LeaseClock
from services.session_actor.machine import ReconnectPolicy

log = structlog.get_logger(__name__)

CLAIM_CONCURRENCY = 64
RELEASE_CONCURRENCY = 64


def node_id_for(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:40] or "node"
    return f"{safe}-{secrets.token_hex(3)}"


class Node:
    def __init__(
        self,
        settings: Settings,
        nc: NatsClient,
        db: AsyncDatabase,
        factory: ClientFactory,
        keyring: Keyring,
    ) -> None:
        self.settings = settings
        self.subjects = settings.subjects
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.db = db
        self.factory = factory
        self.id = node_id_for(settings.node_name)
        self.log = log.bind(node=self.id)
        self.lease = LeaseClock(settings.lease_ttl, settings.lease_self_stop)
        self.cluster = ClusterWatcher(self.js, settings)
        self.sessions = SessionStore(db)
        self.vault = CredentialVault(db, keyring, factory.device_table)
        self.events = EventPublisher(self.js, self.subjects)
        self.reconnect_policy = ReconnectPolicy(
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            flap_disconnects=settings.flap_disconnects,
            flap_window=settings.flap_window,
            flap_floor=settings.flap_backoff_floor,
            pairing_timeout=settings.pairing_timeout,
        )
        self.actors: dict[str, SessionActor] = {}
        self.ledger: Ledger
        self.default_pacing = default_pacing(settings)
        self.retry_policy = RetryPolicy(settings.send_max_attempts, settings.send_retry_base, settings.send_retry_cap)
        self.kv: KeyValue
        self._lease_revision = 0
        self._renewing = asyncio.Lock()
        self._connects = TokenBucket.full(settings.connect_rate, burst=max(1.0, settings.connect_rate / 10))
        self._claimable_since: dict[str, float] = {}
        self._busy: set[str] = set()  # sessions being claimed, started or released
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._placing = asyncio.Lock()  # held by a placement round
        self.background = TaskSet()
        self._handoffs = TaskSet()  # releases by rebalancing
        self._accepting = True
        self._loop_lag_ms = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self.store_root.mkdir(parents=True, exist_ok=True)
        self._clean_old_stores()
        await self.factory.start(self.may_act)
        self.ledger = Ledger(self.js, self.subjects, SendJournal(await self.js.key_value(self.subjects.sends_bucket)))
        await self.cluster.start()
        assert self.cluster.kv is not None
        self.kv = self.cluster.kv
        if self.settings.import_dir is not None:  # before the lease: an import may take a while
            imports = self.db[importer.LEDGER]
            registry = importer.Registry(self.sessions, self.vault, self.kv, self.events, imports, self.id)
            await importer.import_at_startup(self.settings.import_dir, registry)
        await self._register()
        await self._reconcile_catalog()
        self.cluster.subscribe(lambda kind, key: self._wake.set())
        self._tasks = [
            asyncio.create_task(self._renew_loop(), name="lease-renew"),
            asyncio.create_task(self._placement_loop(), name="placement"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
        ]
        self.log.info("node started", capacity=self.settings.node_capacity)

    async def shutdown(self) -> None:
        """Graceful stop: hand every session back at once, announced, then drop the lease."""
        self._accepting = False
        started = time.monotonic()
        with contextlib.suppress(Exception):  # the others then make room for what we release
            await self._renew()
        # A round under way may still win claims: they are handed back (see `_claim`), and
        # actors it started are in `self.actors` once it is over.
        async with self._placing:
            pass
        sids = list(self.actors)
        limit = asyncio.Semaphore(RELEASE_CONCURRENCY)

        async def release(sid: str) -> None:
            async with limit:
                await self._release(sid, "shutdown")

        await asyncio.gather(*(release(sid) for sid in sids), return_exceptions=True)
        await self._handoffs.join()  # rebalancing releases under way end announced, not cut off
        await cancel_and_wait(*self._tasks)
        await self.background.cancel_all()
        with contextlib.suppress(Exception):
            await self.kv.delete(NODE + self.id)
        await self.cluster.stop()
        await self.factory.stop()
        shutil.rmtree(self.store_root, ignore_errors=True)
        self.log.info("node stopped", released=len(sids), seconds=round(time.monotonic() - started, 2))

    # -- the lease --------------------------------------------------------------------------
    def _lease_value(self) -> bytes:
        return encode(
            NodeLease(
                node_id=self.id,
                host=self.settings.node_name,
                pid=os.getpid(),
                capacity=self.settings.node_capacity,
                started_at=utcnow(),
                leaving=not self._accepting,
            )
        )

    async def _register(self) -> None:
        sent = time.monotonic()
        self._lease_revision = await self.kv.create(NODE + self.id, self._lease_value(), msg_ttl=self.settings.lease_ttl)
        self.lease.renewed(sent)

    async def _renew(self) -> None:
        async with self._renewing:  # the loop and a graceful stop must not race (CAS)
            await self._renew_once()

    async def _renew_once(self) -> None:
        sent = time.monotonic()
        ack = await self.js.publish(
            f"$KV.{self.subjects.leases_bucket}.{NODE}{self.id}",
            self._lease_value(),
            headers={Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(self._lease_revision)},
            msg_ttl=self.settings.lease_ttl,
            timeout=self.settings.lease_self_stop,
        )
        self._lease_revision = ack.seq
        self.lease.renewed(sent)

    async def _renew_loop(self) -> None:
        interval = self.settings.lease_renew_interval
        while True:
            tick = time.monotonic()
            await asyncio.sleep(interval)
            self._loop_lag_ms = max(0.0, (time.monotonic() - tick - interval) * 1000)
            try:
                await self._renew()
            except (KeyWrongLastSequenceError, APIError) as exc:
                # The server no longer has our lease: another node may own our sessions now.
                self.log.error("lease lost", error=str(exc))
                await self._lost_lease()
                continue
            except Exception as exc:
                self.log.warning("lease renewal failed", error=str(exc))
            if not self.lease.valid(time.monotonic()) and self.actors:
                self.log.error("lease not renewed in time: stopping every actor", actors=len(self.actors))
                self._abort_all()
            if self.lease.surely_expired(time.monotonic()):
                await self._lost_lease()

    async def _lost_lease(self) -> None:
        """Start over under a new identity: the old one may already be dead to the cluster."""
        self._abort_all()
        await asyncio.gather(*(actor.finished.wait() for actor in list(self.actors.values())))
        self.lease.lost()
        old = self.id
        self.id = node_id_for(self.settings.node_name)
        self.log = log.bind(node=self.id)
        while True:
            try:
                await self._register()
                break
            except Exception as exc:
                self.log.warning("cannot register yet", error=str(exc))
                await asyncio.sleep(self.settings.lease_renew_interval)
        self.log.warning("rejoined under a new identity", previous=old)
        self._wake.set()

    def may_act(self) -> bool:
        return self.lease.valid(time.monotonic())

    def still_owner(self, sid: str, revision: int) -> bool:
        entry = self.cluster.view.sessions.get(sid)
        return (
            self.may_act()
            and entry is not None
            and entry.owner.node == self.id
            and entry.revision == revision
        )

    def _abort_all(self) -> None:
        for actor in list(self.actors.values()):
            actor.abort()

    # -- placement ------------------------------------------------------------------------------
    async def _placement_loop(self) -> None:
        while True:
            await wait_event(self._wake, self.settings.rebalance_interval)
            self._wake.clear()
            await asyncio.sleep(0.02)  # let a burst of changes settle into one round
            try:
                async with self._placing:
                    await self._place()
            except Exception:
                self.log.exception("placement round failed")

    async def _place(self) -> None:
        if not self._accepting or not self.may_act():
            return
        view = self.cluster.view
        now = time.monotonic()
        live = frozenset(view.nodes)
        owners = view.owners()

        # Actors whose session is gone or owned by someone else stop without a trace.
        for sid, actor in list(self.actors.items()):
            entry = view.sessions.get(sid)
            if sid not in self._busy and (entry is None or entry.owner.node != self.id or entry.revision != actor.revision):
                actor.abort()

        # Sessions the bucket says are ours but have no actor (restarted after a lease blip).
        for sid, entry in view.sessions.items():
            if entry.owner.node == self.id and sid not in self.actors and sid not in self._busy:
                self._start_actor(sid, entry.revision)

        claimable = {sid for sid, node in owners.items() if node is None or node not in live}
        self._claimable_since = {sid: self._claimable_since.get(sid, now) for sid in claimable}
        decision = placement.plan(
            me=self.id,
            live_nodes=live,
            owners={sid: node for sid, node in owners.items() if sid not in self._busy},
            capacity=self.settings.node_capacity,
            batch=max(self.settings.rebalance_batch, CLAIM_CONCURRENCY),
            claimable_since=self._claimable_since,
            now=now,
            patience=self.settings.rebalance_interval * 2,
            pinned=frozenset(sid for sid, actor in self.actors.items() if actor.machine.phase == "pairing"),
            leaving=frozenset(node for node, lease in view.nodes.items() if lease.leaving),
        )
        if decision.claim:
            # The claim must be a compare-and-set against the entry the decision saw: the view
            # moves on while claims wait their turn, and a later revision may name a live owner.
            decided = {sid: view.sessions[sid].revision for sid in decision.claim}
            limit = asyncio.Semaphore(CLAIM_CONCURRENCY)

            async def claim(sid: str) -> bool:
                async with limit:
                    return await self._claim(sid, decided[sid])

            won = await asyncio.gather(*(claim(sid) for sid in decision.claim))
            self.log.info("claimed sessions", claimed=sum(won), tried=len(decision.claim), owned=len(self.actors))
        if decision.release:
            self.log.info("handing sessions off", sessions=list(decision.release[: self.settings.rebalance_batch]))
        for sid in decision.release[: self.settings.rebalance_batch]:
            self._handoffs.spawn(self._release(sid, "rebalancing to another node"))

    async def _claim(self, sid: str, seen_revision: int) -> bool:
        """Take `sid` if its entry is still the one at `seen_revision` (claimable then)."""
        if not self._accepting or not self.may_act():
            return False
        self._busy.add(sid)
        try:
            claim = Ownership(node=self.id)
            revision = await self.kv.update(OWN + sid, encode(claim), last=seen_revision)
            self.cluster.learn(sid, claim, revision)
            if not self._accepting:
                # The node began stopping during the claim: an actor started now would outlive
                # the shutdown's release, owning the session (and its connection) until exit.
                with contextlib.suppress(KeyWrongLastSequenceError, NotFoundError):
                    await self._hand_back(sid, "shutdown", revision)
                return False
        except KeyWrongLastSequenceError:
            return False  # it changed since: another node was faster, or it has an owner
        finally:
            self._busy.discard(sid)
        self._start_actor(sid, revision)
        return True

    def _start_actor(self, sid: str, revision: int) -> None:
        actor = SessionActor(self, sid, revision, fence_token(self.cluster.epoch_ms, revision))
        self.actors[sid] = actor
        actor.start()

    async def _release(self, sid: str, reason: str) -> None:
        actor = self.actors.get(sid)
        if actor is None or sid in self._busy:
            return
        self._busy.add(sid)
        try:
            actor.stop(reason)
            await actor.finished.wait()
            entry = self.cluster.view.sessions.get(sid)
            if entry is not None and entry.owner.node == self.id:
                with contextlib.suppress(KeyWrongLastSequenceError, NotFoundError):
                    await self._hand_back(sid, reason, entry.revision)
        finally:
            self._busy.discard(sid)

    async def _hand_back(self, sid: str, reason: str, revision: int) -> None:
        """Announce that `sid` has no owner (a compare-and-set on our claim's revision)."""
        released = Ownership(released=reason)
        self.cluster.learn(sid, released, await self.kv.update(OWN + sid, encode(released), last=revision))

    def actor_finished(self, actor: SessionActor) -> None:
        if self.actors.get(actor.sid) is actor:
            del self.actors[actor.sid]
        self._wake.set()

    async def _reconcile_catalog(self) -> None:
        """Every session in MongoDB has an ownership entry (NATS data may have been lost)."""
        for sid in await self.sessions.ids():
            if sid not in self.cluster.view.sessions:
                with contextlib.suppress(KeyWrongLastSequenceError):
                    await self.kv.create(OWN + sid, encode(Ownership()))

    # -- services for actors -----------------------------------------------------------------
    async def connect_slot(self) -> None:
        """Waits for this node's next connection slot: restores of many sessions are staggered."""
        delay = self._connects.reserve(time.monotonic())
        if delay:
            await asyncio.sleep(delay)

    @property
    def store_root(self) -> Path:
        return self.settings.data_dir / "stores" / self.id

    def store_path(self, sid: str) -> Path:
        return self.store_root / f"{sid}.db"

    def write_store(self, sid: str, data: bytes) -> None:
        path = self.store_path(sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def remove_store(self, sid: str) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.store_path(sid)}{suffix}").unlink()

    def _clean_old_stores(self) -> None:
        """Stores left by earlier incarnations of this node (crashes) are stale copies."""
        prefix = self.id.rsplit("-", 1)[0] + "-"
        for old in (self.settings.data_dir / "stores").glob(prefix + "*"):
            if old.name != self.id:
                shutil.rmtree(old, ignore_errors=True)

    async def answer(self, msg: Any, produce: Callable[[], Awaitable[Any]]) -> None:
        """Reply to a request with the v1 envelope, whatever happens."""
        try:
            reply: Any = Ok(data=await produce())
        except ContractError as exc:
            reply = exc.reply()
        except Exception:
            self.log.exception("command failed", subject=msg.subject)
            reply = Err(error=ErrorBody(code="internal", message="internal error"))
        if msg.reply:
            await msg.respond(encode(reply))

    # -- heartbeats -----------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            beat = NodeHeartbeat(
                node_id=self.id,
                at=utcnow(),
                capacity=self.settings.node_capacity,
                lease_ok=self.lease.valid(time.monotonic()),
                loop_lag_ms=round(self._loop_lag_ms, 1),
                sessions=[
                    SessionBeat(session_id=a.sid, state=a.state, since=a.since, reason=a.reason)  # type: ignore[arg-type]
                    for a in self.actors.values()
                ],
            )
            with contextlib.suppress(Exception):
                await self.nc.publish(self.subjects.heartbeat(self.id), encode(beat))

