"""The session API of contract v1 (`<prefix>.session.*`), answered by any node.

Catalog operations (create, list, get) are served from MongoDB and the cluster view.
Operations on a running session (pair, logout, reconnect, read, delete) are forwarded to the actor
that owns it, wherever it runs; while the session is between owners the request waits a
little and then fails with `session_unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from contracts.envelope import ContractError, Ok, invalid, not_found, unavailable
from contracts.events import StatusEvent
from contracts.queue import PacingPolicy, PolicyRequest, SendPolicy
from contracts.sessions import (
    MAX_LIST_PAGE,
    Empty,
    MarkedRead,
    MarkRead,
    PairRequest,
    PairStarted,
    Session,
    SessionCreate,
    SessionDeleted,
    SessionList,
    SessionListRequest,
)
from contracts.subjects import Subjects
from contracts.types import SESSION_ID_PATTERN, utcnow
from services.common.api import Path, request_router, strict
from services.common.bus import EventPublisher, encode, new_id, request
from services.common.cluster import OWN, ClusterView
from services.common.registration import register
from services.common.sessions import SessionStore, session_view
from services.credentials.vault import CredentialVault
from services.session_actor.actor import CREDENTIALS_UNUSABLE
from services.session_actor.commands import MOVING
from services.session_actor.send_queue import SendQueues

QUEUE = "session-api"
WORKERS = 32
_SID = re.compile(SESSION_ID_PATTERN)
# Pairing by code waits for WhatsApp to hand out the code.
ACTOR_TIMEOUT = 40.0
# Room in a reply for the envelope around a page of sessions and its `next`.
ENVELOPE_ROOM = 1024


def fitting(sessions: list[Session], budget: int) -> list[Session]:
    """The longest head of `sessions` whose JSON array fits in `budget` bytes.

    Trap: a reply larger than the server's max_payload is never sent (nats-py raises in the
    handler) and the caller only sees a timeout: at about 5,000 sessions a list did."""
    used = 2  # []
    for count, session in enumerate(sessions):
        used += len(msgspec.json.encode(session)) + 1
        if used > budget:
            return sessions[:count]
    return sessions


class SessionApi:
    def __init__(
        self,
        *,
        nc: NatsClient,
        subjects: Subjects,
        sessions: SessionStore,
        vault: CredentialVault,
        kv: KeyValue,
        view: ClusterView,
        events: EventPublisher,
        queues: SendQueues,
        default_pacing: PacingPolicy,
        move_patience: float,
        view_current: Callable[[], bool],
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._sessions = sessions
        self._vault = vault
        self._kv = kv  # the leases bucket: own.<sid>
        self._view = view
        self._events = events
        self._queues = queues
        self._default_pacing = default_pacing
        self._move_patience = move_patience  # how long a request waits for a moving session
        # Whether `view` is current: this node renews its lease (JetStream answers).
        self._view_current = view_current

    async def create(self, req: SessionCreate) -> Ok[Session]:
        doc = await register(self._sessions, self._kv, self._events, req.session_id, req.label)
        return Ok(data=session_view(doc, self._view, self._view_current()))

    async def list(self, req: SessionListRequest) -> Ok[SessionList]:
        limit = req.limit or MAX_LIST_PAGE
        docs = await self._sessions.list(after=req.after, limit=limit + 1)  # one more: is there a next page?
        current = self._view_current()
        views = [session_view(doc, self._view, current) for doc in docs[:limit]]
        page = fitting(views, self._nc.max_payload - ENVELOPE_ROOM)
        more = len(page) < len(docs)
        return Ok(data=SessionList(sessions=page, next=page[-1].session_id if more and page else None))

    async def get(self, sid: str) -> Ok[Session]:
        return Ok(data=session_view(await self._existing(sid), self._view, self._view_current()))

    async def pair(self, sid: str, req: PairRequest) -> Ok[PairStarted]:
        await self._existing(sid)
        data = await self._forward(sid, "pair", encode(req))
        return Ok(data=PairStarted(state=data["state"], pair_code=data.get("pair_code")))

    async def logout(self, sid: str) -> Ok[Session]:
        await self._existing(sid)
        await self._forward(sid, "logout", b"{}")
        return await self.get(sid)

    async def reconnect(self, sid: str) -> Ok[Session]:
        doc = await self._existing(sid)
        reason = doc.get("reason") or ""
        if doc["state"] == "stopped" and reason.startswith(CREDENTIALS_UNUSABLE):
            # Nobody runs it: every node that tried handed it back. Pairing again would lose
            # a working link; the remedy is a node with the right keys.
            raise unavailable(
                f"session {sid!r} has credentials no node could open ({reason}); start a node with the "
                "vault keys they were sealed with (WA_VAULT_KEYS) and it takes the session over"
            )
        await self._forward(sid, "reconnect", b"{}")
        return await self.get(sid)

    async def read(self, sid: str, req: MarkRead) -> Ok[MarkedRead]:
        await self._existing(sid)
        data = await self._forward(sid, "read", encode(req))
        return Ok(data=msgspec.convert(data, MarkedRead))

    async def policy(self, sid: str, req: PolicyRequest) -> Ok[SendPolicy]:
        doc = await self._existing(sid)
        policy = req.policy if req.policy is not None else msgspec.convert(doc.get("policy") or {}, SendPolicy)
        if req.policy is not None:
            await self._sessions.set_policy(sid, msgspec.to_builtins(req.policy))
            with contextlib.suppress(ContractError):  # not running now: its next owner reads it
                await self._forward(sid, "policy", encode(req.policy), patient=False)
        effective = msgspec.structs.replace(policy, pacing=policy.pacing or self._default_pacing)
        return Ok(data=effective)

    async def delete(self, sid: str) -> Ok[SessionDeleted]:
        await self._existing(sid)
        try:
            await self._forward(sid, "delete", b"{}")
        except ContractError as exc:
            if exc.code != "session_unavailable":
                raise
            # Nobody runs it (no capacity anywhere): still honour the delete.
            await self._vault.destroy(sid)
        await self._sessions.mark_deleting(sid)
        with contextlib.suppress(NotFoundError):
            await self._kv.delete(OWN + sid)
        await self._queues.forget(sid)
        await self._sessions.remove(sid)
        await self._events.publish(StatusEvent(event_id=new_id(), session_id=sid, at=utcnow(), state="deleted"))
        return Ok(data=SessionDeleted(session_id=sid))

    async def _existing(self, sid: str) -> dict[str, Any]:
        if not _SID.match(sid):
            raise invalid(f"session id: expected 1-64 characters A-Z a-z 0-9 _ -, got {sid!r}")
        doc = await self._sessions.get(sid)
        if doc is None:
            raise not_found(f"no session {sid!r}")
        return doc

    async def _forward(self, sid: str, op: str, body: bytes, patient: bool = True) -> Any:
        """Ask the owning actor; wait while the session moves between owners (if `patient`)."""
        deadline = time.monotonic() + (self._move_patience if patient else 0)
        while True:
            try:
                return await request(self._nc, self._subjects.actor(sid, op), body, timeout=ACTOR_TIMEOUT)
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                why = "has no running owner right now (moving between nodes, or every node is at capacity)"
            except ContractError as exc:
                if exc.code != MOVING:
                    raise
                why = "is moving to another node"
            if time.monotonic() >= deadline:
                raise unavailable(f"session {sid!r} {why}; retry later")
            await asyncio.sleep(0.2)


def build_router(api: SessionApi, settings: Any) -> Any:
    s = settings.subjects
    router = request_router()

    @router.subscriber(s.session_create, queue=QUEUE, decoder=strict(SessionCreate), max_workers=WORKERS)
    async def create(req: SessionCreate) -> Ok[Session]:
        return await api.create(req)

    @router.subscriber(s.session_list, queue=QUEUE, decoder=strict(SessionListRequest), max_workers=WORKERS)
    async def list_sessions(req: SessionListRequest) -> Ok[SessionList]:
        return await api.list(req)

    @router.subscriber(s.session("{sid}", "get"), queue=QUEUE, decoder=strict(Empty), max_workers=WORKERS)
    async def get(req: Empty, sid: str = Path()) -> Ok[Session]:
        return await api.get(sid)

    @router.subscriber(s.session("{sid}", "pair"), queue=QUEUE, decoder=strict(PairRequest), max_workers=WORKERS)
    async def pair(req: PairRequest, sid: str = Path()) -> Ok[PairStarted]:
        return await api.pair(sid, req)

    @router.subscriber(s.session("{sid}", "logout"), queue=QUEUE, decoder=strict(Empty), max_workers=WORKERS)
    async def logout(req: Empty, sid: str = Path()) -> Ok[Session]:
        return await api.logout(sid)

    @router.subscriber(s.session("{sid}", "reconnect"), queue=QUEUE, decoder=strict(Empty), max_workers=WORKERS)
    async def reconnect(req: Empty, sid: str = Path()) -> Ok[Session]:
        return await api.reconnect(sid)

    @router.subscriber(s.session("{sid}", "read"), queue=QUEUE, decoder=strict(MarkRead), max_workers=WORKERS)
    async def read(req: MarkRead, sid: str = Path()) -> Ok[MarkedRead]:
        return await api.read(sid, req)

    @router.subscriber(s.session("{sid}", "policy"), queue=QUEUE, decoder=strict(PolicyRequest), max_workers=WORKERS)
    async def policy(req: PolicyRequest, sid: str = Path()) -> Ok[SendPolicy]:
        return await api.policy(sid, req)

    @router.subscriber(s.session("{sid}", "delete"), queue=QUEUE, decoder=strict(Empty), max_workers=WORKERS)
    async def delete(req: Empty, sid: str = Path()) -> Ok[SessionDeleted]:
        return await api.delete(sid)

    return router
