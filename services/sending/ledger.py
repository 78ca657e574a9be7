"""The bookkeeping of sends: every lifecycle step moves the journal record and publishes its event.

Used by the outbound-queue's intake, expiry and clean-up, and by the session actor that
executes sends. A step that loses its compare-and-set (another actor, the expiry
timer or the clean-up got there first) publishes nothing: each send reaches exactly one
terminal state (`read` once `sent`, `failed`, `expired`), and each step is an event whose id
is derived from the send and the state, so a repeated step is stored once.
"""

from __future__ import annotations

import asyncio

import msgspec
from nats.js import JetStreamContext

from contracts.envelope import ErrorBody
from contracts.events import OutboundEvent
from contracts.internal import QueuedSend
from contracts.queue import DeadLetter
from contracts.subjects import Subjects
from contracts.types import utcnow
from services.common.alerts import dead_letter_alert
from services.common.bus import EventPublisher, encode, new_id
from services.sending import metrics
from services.sending.journal import SendJournal, SendRecord


class Ledger:
    def __init__(self, js: JetStreamContext, subjects: Subjects, journal: SendJournal) -> None:
        self.journal = journal
        self._js = js
        self._subjects = subjects
        self._events = EventPublisher(js, subjects)

    async def event(
        self,
        sid: str,
        send_id: str,
        state: str,
        message_id: str | None = None,
        error: ErrorBody | None = None,
        to: str | None = None,
    ) -> None:
        await self._events.publish(
            OutboundEvent(
                event_id=f"{sid}:out:{send_id}:{state}",
                session_id=sid,
                at=utcnow(),
                id=send_id,
                state=state,  # type: ignore[arg-type]
                message_id=message_id,
                error=error,
                to=to,
            )
        )

    async def queued(self, sid: str, send_id: str, to: str) -> None:
        """A new send is in its session's queue."""
        metrics.SENDS_ACCEPTED.inc()
        await self.event(sid, send_id, "queued", to=to)

    async def reject(self, sid: str, send_id: str, error: ErrorBody) -> None:
        """A send that was never accepted, reported as an event (its request had no reply
        subject). Its event id is unique: it is not a step of any accepted send's lifecycle."""
        metrics.SENDS.labels("rejected", error.code).inc()
        await self._events.publish(
            OutboundEvent(
                event_id=f"{sid}:out:{send_id}:rejected:{new_id()}",
                session_id=sid,
                at=utcnow(),
                id=send_id,
                state="failed",
                error=error,
            )
        )

    async def sent(self, sid: str, record: SendRecord, message_id: str) -> None:
        # Both go to the journal's one stream over one connection, stored in the order sent:
        # the message index is there before `sent` is, without a round trip between them.
        await asyncio.gather(
            self.journal.note_message(sid, message_id, record.id),
            self.journal.settle(sid, msgspec.structs.replace(record, state="sent", message_id=message_id)),
        )
        metrics.SENDS.labels("sent", "").inc()
        if record.accepted_at is not None:
            metrics.SEND_LATENCY.observe(max(0.0, (utcnow() - record.accepted_at).total_seconds()))
        await self.event(sid, record.id, "sent", message_id=message_id)

    async def release(self, sid: str, record: SendRecord, attempts: int) -> None:
        """An attempt that surely did not reach WhatsApp: the send is `accepted` again."""
        await self.journal.settle(sid, SendRecord(id=record.id, state="accepted", attempts=attempts))

    async def fail(
        self,
        sid: str,
        record: SendRecord,
        error: ErrorBody,
        dead_letter: QueuedSend | None = None,
        node: str | None = None,
    ) -> None:
        """A send the actor holds (`sending`) will never be sent; with `dead_letter`, a copy
        goes to the dead-letter queue and an alert says so."""
        await self.journal.settle(sid, msgspec.structs.replace(record, state="failed", failed=error.code))
        metrics.SENDS.labels("failed", error.code).inc()
        if dead_letter is not None:
            now = utcnow()
            letter = DeadLetter(item=dead_letter, error=error, attempts=record.attempts, failed_at=now, node=node)
            await self._js.publish(
                self._subjects.dead_letter(sid), encode(letter), headers={"Nats-Msg-Id": f"{sid}/{record.id}"}
            )
            metrics.DEAD_LETTERS.inc()
            await self._events.publish(dead_letter_alert(sid, record.id, error, now, node))
        await self.event(sid, record.id, "failed", error=error)

    async def fail_waiting(self, sid: str, send_id: str, error: ErrorBody) -> bool:
        """Fail a send nobody holds (still `accepted`); False when it had moved on."""
        moved, _ = await self.journal.move(sid, send_id, "accepted", "failed", failed=error.code)
        if moved:
            metrics.SENDS.labels("failed", error.code).inc()
            await self.event(sid, send_id, "failed", error=error)
        return moved

    async def expire(self, sid: str, send_id: str) -> bool:
        """A send still waiting when its `expires_at` passed; False when it had moved on."""
        moved, _ = await self.journal.move(sid, send_id, "accepted", "expired")
        if moved:
            metrics.SENDS.labels("expired", "expired").inc()
            await self.event(
                sid, send_id, "expired", error=ErrorBody(code="expired", message="expires_at passed before sending")
            )
        return moved

    async def repeat(self, sid: str, record: SendRecord) -> None:
        """Say again what a send's record says (a copy came back after a crash or a retry).

        The event ids make it a no-op where the first one was stored.
        """
        if record.state == "sent" and record.message_id:
            await self.event(sid, record.id, "sent", message_id=record.message_id)
        elif record.state == "failed":
            await self.event(sid, record.id, "failed", error=ErrorBody(code=record.failed or "failed", message="failed earlier"))
        elif record.state == "expired":
            await self.event(
                sid, record.id, "expired", error=ErrorBody(code="expired", message="expires_at passed before sending")
            )

