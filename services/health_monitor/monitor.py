"""The health monitor's I/O side: feeds the live view and tells the truth when an owner dies.

OWNER LOST. A node that stops renewing its lease self-stops its actors, and the server then
expires the lease. Until another node claims its sessions, MongoDB still says what the dead
owner last wrote (often `connected`). The monitor writes `disconnected` with reason
OWNER_LOST for each such session, fenced by the dead owner's token: a new owner fences the
document with a newer token first, so the write is refused once a new owner took over. Only
an accepted write is announced, with an event id derived from session and token, so several
monitor replicas doing the same work produce one stored event (JetStream dedupe). Only states
about the dead owner's connection are rewritten (CONNECTION_STATES), and a document already
reported owner_lost is left alone, so a restarted monitor announces nothing twice.

A pass runs when a lease disappears, at start (owners that died while no monitor ran), and
every RECHECK_INTERVAL (retries after a failed write or publish).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import msgspec
import pymongo
import structlog
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from contracts.events import StatusEvent
from contracts.internal import NodeHeartbeat
from contracts.types import LIVE_STATES, utcnow
from services.common.alerts import owner_lost_alert
from services.common.bus import EventPublisher
from services.common.cluster import ClusterWatcher, fence_token, parse_token
from services.common.config import Settings
from services.common.sessions import OWNER_LOST, SessionStore
from services.common.tasks import cancel_and_wait, wait_event
from services.health_monitor.changes import Changes
from services.health_monitor.metrics import OWNER_LOST as OWNER_LOST_REPORTS
from services.health_monitor.view import HealthView, Orphan

log = structlog.get_logger(__name__)

RECHECK_INTERVAL = 1.0
# Session documents are read in chunks of ids: bounded queries (and SecantusDB, the dev server,
# slows down sharply on long `$in` lists).
READ_CHUNK = 100
# Kubernetes probes time out after a second or two: a probe must answer before that.
PROBE_TIMEOUT = 1.0
PROBE_INTERVAL = 1.0

# States that describe the connection the owner held, and die with it. The others (created,
# logged_out, stopped, banned) describe the session itself and stay: the next owner reads
# them to decide what to do (a logged-out session must not start as if merely disconnected).
CONNECTION_STATES = LIVE_STATES | {"disconnected"}

_DOC_FIELDS = {"state": 1, "reason": 1, "owner_token": 1}


def needs_owner_lost(doc: dict[str, Any], token: str) -> bool:
    """Should the session document be rewritten as owner_lost on behalf of `token`'s owner?"""
    if (parse_token(doc.get("owner_token", "")) or (0, 0)) > (parse_token(token) or (0, 0)):
        return False  # a newer owner holds it; the fenced write would be refused anyway
    if doc["state"] not in CONNECTION_STATES:
        return False
    return not (doc["state"] == "disconnected" and doc.get("reason") == OWNER_LOST)


class Check(msgspec.Struct, omit_defaults=True):
    ok: bool
    error: str | None = None


class HealthMonitor:
    def __init__(self, settings: Settings, nc: NatsClient, db: AsyncDatabase) -> None:
        js = nc.jetstream()
        self.nc = nc
        self.db = db
        self.cluster = ClusterWatcher(js, settings)
        self.view = HealthView(self.cluster.view, settings.heartbeat_interval)
        self.store = SessionStore(db)
        self.events = EventPublisher(js, settings.subjects)
        self.subjects = settings.subjects
        self.changes = Changes()  # the dashboard's live streams wait on it
        self._wake = asyncio.Event()
        # Orphans handled (written, refused or not applicable): not looked at again.
        self._settled: set[Orphan] = set()
        # Accepted writes whose event could not be published yet.
        self._unpublished: dict[Orphan, StatusEvent] = {}
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._js = js
        self._leases_stream = f"KV_{settings.subjects.leases_bucket}"
        self._jetstream_ok_at = time.monotonic()  # at start: servers were waited for
        self._jetstream_error: str | None = None
        self._jetstream_patience = settings.lease_self_stop

    async def start(self) -> None:
        self.cluster.subscribe(self._cluster_changed)
        await self.cluster.start()
        self._task = asyncio.create_task(self._owner_lost_loop(), name="owner-lost")
        self._probe = asyncio.create_task(self._jetstream_loop(), name="jetstream-probe")

    async def stop(self) -> None:
        await cancel_and_wait(self._task, self._probe)
        await self.cluster.stop()

    # -- JetStream ---------------------------------------------------------------------------
    async def _jetstream_loop(self) -> None:
        """Asks the leases bucket's stream for its state every PROBE_INTERVAL. While it does
        not answer, no node can renew its lease: within `lease_self_stop` every actor has
        stopped, so the view says no session is connected (and /healthz fails)."""
        while True:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await self._js.stream_info(self._leases_stream)
            except Exception as exc:
                self._jetstream_error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                self._jetstream_ok_at, self._jetstream_error = time.monotonic(), None
            self.view.jetstream_current = self.jetstream_current()
            await asyncio.sleep(PROBE_INTERVAL)

    def jetstream_current(self) -> bool:
        return time.monotonic() - self._jetstream_ok_at < self._jetstream_patience

    # -- inputs (FastStream handlers and the cluster watcher) -------------------------------
    async def on_heartbeat(self, beat: NodeHeartbeat) -> None:
        self.view.heartbeat(beat, time.monotonic())

    async def on_status(self, event: StatusEvent) -> None:
        if event.token is not None and parse_token(event.token) is None:
            return  # no owner reported it (see outbound_queue follow_states)
        self.view.status(event)
        self.changes.touch()

    def _cluster_changed(self, kind: str, key: str) -> None:
        self.view.cluster_changed(kind, key, time.monotonic())
        self.changes.touch()
        if kind == "node_down":
            log.info("node lease gone", node=key)
            self._wake.set()

    # -- owner lost --------------------------------------------------------------------------
    async def _owner_lost_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.report_owner_lost()
            except PyMongoError as exc:  # MongoDB away: expected now and then, no traceback
                log.warning("owner-lost pass failed; retrying", error=str(exc))
            except Exception:
                log.exception("owner-lost pass failed; retrying")
            self.view.prune(time.monotonic())
            await wait_event(self._wake, RECHECK_INTERVAL)

    async def report_owner_lost(self) -> None:
        orphans = set(self.view.orphaned_sessions())
        # An orphan that was claimed (or deleted) since is nobody's business here any more.
        self._settled &= orphans
        self._unpublished = {o: e for o, e in self._unpublished.items() if o in orphans}
        todo = orphans - self._settled
        if not todo:
            return
        docs = await self._documents([o.session_id for o in todo])
        now = utcnow()
        results = await asyncio.gather(
            *(self._settle(o, docs.get(o.session_id), now) for o in todo), return_exceptions=True
        )
        reported = sum(r is True for r in results)
        failed = [r for r in results if isinstance(r, BaseException)]
        if reported:
            log.warning(
                "sessions reported owner_lost", sessions=reported, nodes=sorted({o.node for o in todo})
            )
        if failed:
            log.warning("owner_lost reports failed; will retry", failed=len(failed), error=str(failed[0]))

    async def _documents(self, sids: list[str]) -> dict[str, dict[str, Any]]:
        docs: dict[str, dict[str, Any]] = {}
        for start in range(0, len(sids), READ_CHUNK):
            query = {"_id": {"$in": sids[start : start + READ_CHUNK]}}
            docs.update({d["_id"]: d async for d in self.store.collection.find(query, _DOC_FIELDS)})
        return docs

    async def _settle(self, orphan: Orphan, doc: dict[str, Any] | None, now: datetime) -> bool:
        """Write and announce owner_lost for one orphan; True when this call wrote it."""
        event = self._unpublished.get(orphan)
        wrote = False
        if event is None:
            token = fence_token(self.cluster.epoch_ms, orphan.revision)
            if doc is None or not needs_owner_lost(doc, token):
                self._settled.add(orphan)
                return False
            accepted = await self.store.report(
                orphan.session_id,
                token,
                state="disconnected",
                since=now,
                reason=OWNER_LOST,
                jid=None,
                node=None,
            )
            if not accepted:  # a new owner fenced the document meanwhile
                self._settled.add(orphan)
                return False
            wrote = True
            event = StatusEvent(
                event_id=f"{orphan.session_id}:owner_lost:{token}",
                session_id=orphan.session_id,
                at=now,
                state="disconnected",
                reason=OWNER_LOST,
                token=token,
            )
            self._unpublished[orphan] = event
            OWNER_LOST_REPORTS.inc()
        await self.events.publish(event)
        await self.events.publish(owner_lost_alert(event, orphan.node))
        del self._unpublished[orphan]
        self._settled.add(orphan)
        return wrote

    # -- probes --------------------------------------------------------------------------------
    async def checks(self) -> dict[str, Check]:
        mongo = Check(ok=True)
        try:
            with pymongo.timeout(PROBE_TIMEOUT):
                await self.db.command("ping")
        except Exception as exc:
            mongo = Check(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
        nats = Check(ok=True) if self.nc.is_connected else Check(ok=False, error="not connected")
        jetstream = (
            Check(ok=True)
            if self.jetstream_current()
            else Check(ok=False, error=self._jetstream_error or "no answer from JetStream")
        )
        return {"nats": nats, "jetstream": jetstream, "mongo": mongo}
