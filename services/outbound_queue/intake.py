"""Intake of `<prefix>.send.<sid>`: validate, de-duplicate, queue durably, say `queued`.

Idempotency lives in the send journal (services/common/sends.py): the first request with an
id creates its record; any later one finds it and is answered `duplicate: true`, for as long
as records are kept (`outbound_retention_days`), far beyond JetStream's duplicate window.
The record is written before the publish. A duplicate whose send is still `accepted` (it may
be waiting in the queue, or a crash may have hit between record and publish) is published
again under the same message id: JetStream drops it inside its window, and beyond it the
actor's compare-and-set lets only one copy ever be sent.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from faststream.message import StreamMessage
from nats.js import JetStreamContext

from contracts.envelope import ContractError, ErrorBody, Ok, invalid, not_found, unavailable
from contracts.events import OutboundEvent
from contracts.internal import QueuedSend
from contracts.sending import SendAccepted, SendText
from contracts.types import SESSION_ID_PATTERN, utcnow
from services.common.bus import EventPublisher, encode
from services.common.cluster import ClusterView
from services.common.config import Settings
from services.common.sends import SendJournal

_SID = re.compile(SESSION_ID_PATTERN)
# Sessions that cannot send: no linked device, or the device is gone for good.
UNAVAILABLE_STATES = {"created": "it is not paired yet", "logged_out": "it is logged out", "banned": "it is banned"}


class Intake:
    def __init__(
        self,
        settings: Settings,
        js: JetStreamContext,
        journal: SendJournal,
        cluster: ClusterView,
        states: dict[str, str],
    ) -> None:
        self._subjects = settings.subjects
        self._js = js
        self._journal = journal
        self._cluster = cluster
        self._states = states  # latest public state per session, from status events
        self._events = EventPublisher(js, self._subjects)

    def check_session(self, sid: str) -> None:
        if not _SID.match(sid):
            raise invalid(f"session id: expected 1-64 characters A-Z a-z 0-9 _ -, got {sid!r}")
        if sid not in self._cluster.sessions:
            raise not_found(f"no session {sid!r}")
        why = UNAVAILABLE_STATES.get(self._states.get(sid, ""))
        if why:
            raise unavailable(f"session {sid!r} cannot send: {why}")

    async def accept(self, sid: str, req: SendText) -> Ok[SendAccepted]:
        self.check_session(sid)
        now = utcnow()
        existing = await self._journal.accept(sid, req.id, now)
        if existing is not None:
            if existing.state == "accepted":
                await self._enqueue(sid, req, existing.accepted_at or now)
            return Ok(data=SendAccepted(id=req.id, duplicate=True))
        # `queued` goes out before the send can reach its actor, so no `sent` precedes it.
        await self._events.publish(
            OutboundEvent(event_id=f"{sid}:out:{req.id}:queued", session_id=sid, at=now, id=req.id, state="queued")
        )
        await self._enqueue(sid, req, now)
        return Ok(data=SendAccepted(id=req.id, duplicate=False))

    async def _enqueue(self, sid: str, req: SendText, accepted_at: Any) -> None:
        item = QueuedSend(
            id=req.id,
            session_id=sid,
            to=req.to,
            text=req.text,
            accepted_at=accepted_at,
            send_at=req.send_at,
            expires_at=req.expires_at,
        )
        await self._js.publish(
            self._subjects.outbound(sid),
            encode(item),
            headers={"Nats-Msg-Id": f"{sid}/{req.id}"},
        )

    async def report_unanswered(self, msg: StreamMessage[Any], error: ContractError) -> None:
        """A send without a reply subject failed: say so on the session's outbound events."""
        sid = msg.raw_message.subject.rsplit(".", 1)[-1]
        if not _SID.match(sid):
            return  # no valid session to report under; the error was logged by the middleware
        try:
            send_id = str(msgspec.json.decode(msg.body).get("id", ""))[:128]
        except Exception:
            send_id = ""
        if send_id and await self._journal.get(sid, send_id) is not None:
            return  # that id names an accepted send: a bad copy must not mark it failed
        await self._events.publish(
            OutboundEvent(
                event_id=f"{sid}:out:{send_id}:rejected:{error.code}:{utcnow().timestamp()}",
                session_id=sid,
                at=utcnow(),
                id=send_id,
                state="failed",
                error=ErrorBody(code=error.code, message=error.message),
            )
        )
