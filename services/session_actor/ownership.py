"""Which sessions this node runs: placement rounds, claims and releases of `own.<sid>`.

- A claim is a compare-and-set on the session's entry; the revision it produced is the
  actor's fencing token.
- A release stops the actor (credentials flushed, connection closed), then announces that
  the session has no owner by a compare-and-set on the claim's revision; another node
  claims it at once.
- Placement rounds (placement.py decides) run when the bucket changes, when an actor ends,
  and every `rebalance_interval`. Sessions being claimed, started or released are busy: no
  round touches them meanwhile.
- A session whose credentials this node cannot open is refused: handed back, and left to
  the other nodes for REFUSAL_TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import structlog
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from contracts.internal import Ownership
from services.common.bus import encode
from services.common.cluster import OWN, ClusterWatcher
from services.common.config import Settings
from services.common.tasks import TaskSet, wait_event
from services.session_actor import metrics, placement
from services.session_actor.actors import ActorRegistry

log = structlog.get_logger(__name__)

CLAIM_CONCURRENCY = 64
RELEASE_CONCURRENCY = 64
# A session this node could not run is left to the others for this long.
REFUSAL_TTL = 60.0


class Identity(Protocol):
    """Who this node is right now, and whether it may act (lease_keeper.LeaseKeeper)."""

    node_id: str

    def may_act(self) -> bool: ...


class SessionOwnership:
    def __init__(
        self, settings: Settings, kv: KeyValue, cluster: ClusterWatcher, me: Identity, actors: ActorRegistry
    ) -> None:
        self._settings = settings
        self._kv = kv
        self._cluster = cluster
        self._me = me
        self._actors = actors
        self._claimable_since: dict[str, float] = {}
        self._busy: set[str] = set()  # sessions being claimed, started or released
        self._wake = asyncio.Event()
        self._placing = asyncio.Lock()  # held by a placement round
        self._handoffs = TaskSet()  # releases by rebalancing, and refused sessions handed back
        self._refused: dict[str, float] = {}  # sid -> until when this node does not claim it
        self.accepting = True

    def wake(self) -> None:
        """Something changed: run a placement round soon."""
        self._wake.set()

    async def run(self) -> None:
        """Placement rounds until cancelled."""
        while True:
            await wait_event(self._wake, self._settings.rebalance_interval)
            self._wake.clear()
            await asyncio.sleep(0.02)  # let a burst of changes settle into one round
            try:
                async with self._placing:
                    await self.place()
            except Exception:
                log.exception("placement round failed", node=self._me.node_id)

    async def place(self) -> None:
        """One placement round: stop actors that are no longer ours, restart those that are
        ours without one, then claim and release as placement.plan decides."""
        if not self.accepting or not self._me.may_act():
            return
        me = self._me.node_id
        view = self._cluster.view
        now = time.monotonic()
        live = frozenset(view.nodes)
        owners = view.owners()

        # Actors whose session is gone or owned by someone else stop without a trace.
        for actor in self._actors:
            entry = view.sessions.get(actor.sid)
            stale = entry is None or entry.owner.node != me or entry.revision != actor.revision
            if actor.sid not in self._busy and stale:
                actor.abort()

        # Sessions the bucket says are ours but have no actor (restarted after a lease blip).
        for sid, entry in view.sessions.items():
            if entry.owner.node == me and sid not in self._actors and sid not in self._busy:
                self._actors.start(sid, entry.revision)

        claimable = {sid for sid, node in owners.items() if node is None or node not in live}
        self._claimable_since = {sid: self._claimable_since.get(sid, now) for sid in claimable}
        decision = placement.plan(
            me=me,
            live_nodes=live,
            owners={sid: node for sid, node in owners.items() if sid not in self._busy},
            capacity=self._settings.node_capacity,
            batch=max(self._settings.rebalance_batch, CLAIM_CONCURRENCY),
            claimable_since=self._claimable_since,
            now=now,
            patience=self._settings.rebalance_interval * 2,
            pinned=self._actors.pairing(),
            leaving=frozenset(node for node, lease in view.nodes.items() if lease.leaving or lease.unfit),
        )
        refused = {sid for sid, until in self._refused.items() if until > now}
        self._refused = {sid: self._refused[sid] for sid in refused}
        # The claim must be a compare-and-set against the entry the decision saw: the view
        # moves on while claims wait their turn, and a later revision may name a live owner.
        decided = {sid: view.sessions[sid].revision for sid in decision.claim if sid not in refused}
        if decided:
            limit = asyncio.Semaphore(CLAIM_CONCURRENCY)

            async def claim(sid: str) -> bool:
                async with limit:
                    won = await self.claim(sid, decided[sid])
                if won and owners.get(sid) is not None:  # its owner died without handing it over
                    metrics.TAKEOVERS.inc()
                return won

            won = await asyncio.gather(*(claim(sid) for sid in decided))
            log.info("claimed sessions", node=me, claimed=sum(won), tried=len(decided), owned=len(self._actors))
        released = decision.release[: self._settings.rebalance_batch]
        if released:
            log.info("handing sessions off", node=me, sessions=list(released))
        for sid in released:
            self._handoffs.spawn(self.release(sid, "rebalancing to another node"))

    async def claim(self, sid: str, seen_revision: int) -> bool:
        """Take `sid` if its entry is still the one at `seen_revision` (claimable then)."""
        if not self.accepting or not self._me.may_act():
            return False
        self._busy.add(sid)
        try:
            claim = Ownership(node=self._me.node_id)
            revision = await self._kv.update(OWN + sid, encode(claim), last=seen_revision)
            self._cluster.learn(sid, claim, revision)
            if not self.accepting:
                # The node began stopping during the claim: an actor started now would outlive
                # the shutdown's release, owning the session (and its connection) until exit.
                with contextlib.suppress(KeyWrongLastSequenceError, NotFoundError):
                    await self._hand_back(sid, "shutdown", revision)
                return False
        except KeyWrongLastSequenceError:
            metrics.CLAIMS.labels("lost").inc()
            return False  # it changed since: another node was faster, or it has an owner
        finally:
            self._busy.discard(sid)
        metrics.CLAIMS.labels("won").inc()
        self._actors.start(sid, revision)
        return True

    async def release(self, sid: str, reason: str) -> None:
        """Stop the session's actor here and announce that it has no owner."""
        actor = self._actors.get(sid)
        if actor is None or sid in self._busy:
            return
        self._busy.add(sid)
        try:
            actor.stop(reason)
            await actor.finished.wait()
            entry = self._cluster.view.sessions.get(sid)
            if entry is not None and entry.owner.node == self._me.node_id:
                with contextlib.suppress(KeyWrongLastSequenceError, NotFoundError):
                    await self._hand_back(sid, reason, entry.revision)
                    metrics.RELEASES.labels("shutdown" if reason == "shutdown" else "rebalancing").inc()
        finally:
            self._busy.discard(sid)

    async def _hand_back(self, sid: str, reason: str, revision: int) -> None:
        """Announce that `sid` has no owner (a compare-and-set on our claim's revision)."""
        released = Ownership(released=reason)
        self._cluster.learn(sid, released, await self._kv.update(OWN + sid, encode(released), last=revision))

    def refuse(self, sid: str, revision: int, reason: str) -> None:
        """This node cannot run `sid` (its keys cannot open the credentials): hand it back, and
        claim it again only after REFUSAL_TTL, so a node that can takes it meanwhile."""
        self._refused[sid] = time.monotonic() + REFUSAL_TTL
        self._busy.add(sid)  # no round restarts it before the hand-back has landed
        self._handoffs.spawn(self._refused_back(sid, revision, reason))

    async def _refused_back(self, sid: str, revision: int, reason: str) -> None:
        try:
            with contextlib.suppress(KeyWrongLastSequenceError, NotFoundError):
                await self._hand_back(sid, reason, revision)
        finally:
            self._busy.discard(sid)
        self.wake()

    def stop_accepting(self) -> None:
        """No more claims from now on; a claim landing meanwhile is handed back."""
        self.accepting = False

    async def release_all(self) -> int:
        """Graceful stop: hand every session back at once, announced; returns how many."""
        self.stop_accepting()
        # A round under way may still win claims: they are handed back (see `claim`), and
        # actors it started are in the registry once it is over.
        async with self._placing:
            pass
        sids = self._actors.sids()
        limit = asyncio.Semaphore(RELEASE_CONCURRENCY)

        async def release(sid: str) -> None:
            async with limit:
                await self.release(sid, "shutdown")

        await asyncio.gather(*(release(sid) for sid in sids), return_exceptions=True)
        await self._handoffs.join()  # rebalancing releases under way end announced, not cut off
        return len(sids)

    async def reconcile_catalog(self, sids: list[str]) -> None:
        """Every session in MongoDB has an ownership entry (NATS data may have been lost)."""
        for sid in sids:
            if sid not in self._cluster.view.sessions:
                with contextlib.suppress(KeyWrongLastSequenceError):
                    await self._kv.create(OWN + sid, encode(Ownership()))
