"""Intake of `<prefix>.send.<sid>`: validate, de-duplicate, queue durably, say `queued`.

Idempotency lives in the send journal (services/sending/journal.py): the first request with an
id creates its record; any later one finds it and is answered `duplicate: true`, for as long
as records are kept (`outbound_retention_days`), far beyond JetStream's duplicate window.
The record is written before the publish. A duplicate whose send is still `accepted` (it may
be waiting in the queue, or a crash may have hit between record and publish) is published
again under the same message id: JetStream drops it inside its window, and beyond it the
actor's compare-and-set lets only one copy ever be sent.

A send with `send_at` waits as a JetStream message schedule that drops it into the session's
queue at that time; one with `expires_at` also gets a schedule that fires an expiry check
then (upkeep.py), so it is reported `expired` on time even while its session is offline.

A media send is checked here (services/common/media.py: inline size, URL syntax, and the
queued message must fit in NATS) and queued like a text; its actor fetches a URL when it
sends it. Replies, reactions, edits, revokes, locations and contacts are queued like texts
too, each within WhatsApp's limits (contracts.sending.check_body).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from faststream.message import StreamMessage
from nats.js import JetStreamContext

from contracts.envelope import ContractError, ErrorBody, Ok, invalid, not_found, unavailable
from contracts.internal import ExpiryCheck, QueuedSend
from contracts.messages import parts
from contracts.sending import SendAccepted, SendText, check_body
from contracts.types import SESSION_ID_PATTERN, utcnow
from services.common.bus import encode
from services.common.cluster import ClusterView
from services.common.config import Settings
from services.common.media import NATS_DEFAULT_MAX_PAYLOAD, MediaLimits, check_fits, check_send
from services.sending.journal import id_token
from services.sending.ledger import Ledger

_SID = re.compile(SESSION_ID_PATTERN)
# Sessions that cannot send: no linked device, or the device is gone for good.
UNAVAILABLE_STATES = {"created": "it is not paired yet", "logged_out": "it is logged out", "banned": "it is banned"}
# How long a queue depth read from the stream is trusted (sends accepted since are added, so
# it only over-counts, and a count near the limit is read again at once). Each read parses
# the stream's whole info: once a second per busy session cost intake a tenth of its CPU.
DEPTH_TTL = 30.0


def schedule_at(when: datetime) -> str:
    """A JetStream schedule time: whole seconds (rounded up, never early), UTC."""
    stamp = datetime.fromtimestamp(math.ceil(when.timestamp()), UTC)
    return "@at " + stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


class Intake:
    def __init__(
        self,
        settings: Settings,
        js: JetStreamContext,
        ledger: Ledger,
        cluster: ClusterView,
        states: dict[str, str],
        max_payload: int = NATS_DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._subjects = settings.subjects
        self._queue_limit = settings.queue_limit
        self._media_limits = MediaLimits.from_settings(settings)
        self._max_payload = max_payload  # of the NATS server the queue publishes to
        self._js = js
        self._ledger = ledger
        self._cluster = cluster
        self._states = states  # latest public state per session, from status events
        self._depths: dict[str, tuple[int, float]] = {}

    def check_known(self, sid: str) -> None:
        if not _SID.match(sid):
            raise invalid(f"session id: expected 1-64 characters A-Z a-z 0-9 _ -, got {sid!r}")
        if sid not in self._cluster.sessions:
            raise not_found(f"no session {sid!r}")

    def check_session(self, sid: str) -> None:
        """Known, and able to send."""
        self.check_known(sid)
        why = UNAVAILABLE_STATES.get(self._states.get(sid, ""))
        if why:
            raise unavailable(f"session {sid!r} cannot send: {why}")

    async def accept(self, sid: str, req: SendText) -> Ok[SendAccepted]:
        self.check_session(sid)
        now = utcnow()
        if req.expires_at is not None and req.expires_at <= now:
            raise invalid("expires_at: already in the past")
        if req.send_at is not None and req.expires_at is not None and req.send_at >= req.expires_at:
            raise invalid("send_at: must be before expires_at")
        check_body(req)
        if req.media is not None:
            check_send(req, self._media_limits)
            check_fits(len(encode(self._queued(sid, req, now))), self._max_payload)
        existing, revision = await self._ledger.journal.accept(sid, req.id, now)
        if existing is not None:
            if existing.state == "accepted":  # (its record may have changed: no revision)
                await self._enqueue(sid, req, existing.accepted_at or now, None)
            return Ok(data=SendAccepted(id=req.id, duplicate=True))
        if await self.depth(sid, near=self._queue_limit) >= self._queue_limit:
            await self._ledger.journal.forget(sid, req.id)  # not accepted: a retry later is new
            raise ContractError(
                "rate_limited", f"session {sid!r} already has {self._queue_limit} sends waiting; slow down"
            )
        # `queued` is written to the connection before the send itself and NATS handles one
        # connection's messages in order, so no `sent` can precede it; neither waits for
        # the other's acknowledgement.
        await asyncio.gather(self._ledger.queued(sid, req.id, req.to), self._enqueue(sid, req, now, revision))
        return Ok(data=SendAccepted(id=req.id, duplicate=False))

    async def depth(self, sid: str, near: int) -> int:
        """Sends waiting in the session's queue.

        Cached briefly (intake runs hot) and counted up with each accepted send; the cache
        over-counts sends that left meanwhile, so at `near` the stream is asked again.
        """
        count, read_at = self._depths.get(sid, (0, 0.0))
        if time.monotonic() - read_at > DEPTH_TTL or count >= near:
            subject = self._subjects.outbound(sid)
            info = await self._js.stream_info(self._subjects.outbound_stream, subjects_filter=subject)
            count = (info.state.subjects or {}).get(subject, 0)
            read_at = time.monotonic()
        self._depths[sid] = (count + 1, read_at)
        return count

    def _queued(self, sid: str, req: SendText, accepted_at: Any, revision: int | None = None) -> QueuedSend:
        return QueuedSend(
            id=req.id,
            session_id=sid,
            to=req.to,
            text=req.text,
            accepted_at=accepted_at,
            send_at=req.send_at,
            expires_at=req.expires_at,
            media=req.media,
            reply_to=req.reply_to,
            journal_revision=revision,
            **parts(req),
        )

    async def _enqueue(self, sid: str, req: SendText, accepted_at: Any, revision: int | None) -> None:
        item = self._queued(sid, req, accepted_at, revision)
        key = id_token(req.id)
        headers = {"Nats-Msg-Id": f"{sid}/{req.id}"}
        if req.expires_at is not None:
            await self._js.publish(
                self._subjects.expiry_timer(sid, key),
                encode(ExpiryCheck(session_id=sid, id=req.id)),
                headers={
                    **headers,
                    "Nats-Msg-Id": f"{sid}/{req.id}/expiry",
                    "Nats-Schedule": schedule_at(req.expires_at),
                    "Nats-Schedule-Target": self._subjects.expiry(sid),
                },
            )
        if req.send_at is not None and req.send_at > utcnow():
            await self._js.publish(
                self._subjects.scheduled(sid, key),
                encode(item),
                headers={
                    **headers,
                    "Nats-Schedule": schedule_at(req.send_at),
                    "Nats-Schedule-Target": self._subjects.outbound(sid),
                },
            )
        else:
            await self._js.publish(self._subjects.outbound(sid), encode(item), headers=headers)

    async def report_unanswered(self, msg: StreamMessage[Any], error: ContractError) -> None:
        """A send without a reply subject failed: say so on the session's outbound events."""
        sid = msg.raw_message.subject.rsplit(".", 1)[-1]
        if not _SID.match(sid):
            return  # no valid session to report under; the error was logged by the middleware
        try:
            send_id = str(msgspec.json.decode(msg.body).get("id", ""))[:128]
        except Exception:
            send_id = ""
        if send_id and await self._ledger.journal.get(sid, send_id) is not None:
            return  # that id names an accepted send: a bad copy must not mark it failed
        await self._ledger.reject(sid, send_id, ErrorBody(code=error.code, message=error.message))
